//! Frame codec properties: round trips, and no panic or over-allocation on any input.

use borgstore_ipc::codec::{decode_body, encode_frame, read_header, FrameError};
use borgstore_ipc::protocol::{HandshakeReply, Hello, MoveAction, Op, Reply, Request, Response, StoreSummary, Welcome};
use borgstore_ipc::{Error, ErrorKind, ItemInfo, Quota, Source, StatValue};
use proptest::prelude::*;

const MAX: u32 = 1 << 20;

fn every_op() -> Vec<Op> {
    let src = vec![Source::new("a", -3, 2), Source::new("b", 0, 0)];
    vec![
        Op::Create,
        Op::Destroy,
        Op::Open,
        Op::Close,
        Op::Info { name: "n".into(), deleted: true },
        Op::Load { name: "n".into(), offset: -5, size: Some(3), deleted: false },
        Op::Load { name: "n".into(), offset: 0, size: None, deleted: true },
        Op::Store { name: "n".into(), value: vec![0, 1, 255].into() },
        Op::Delete { name: "n".into(), deleted: false },
        Op::Move { name: "n".into(), action: MoveAction::Delete },
        Op::Move { name: "n".into(), action: MoveAction::Undelete },
        Op::Move { name: "n".into(), action: MoveAction::ChangeLevel { deleted: true } },
        Op::Move { name: "n".into(), action: MoveAction::Rename { new_name: "m".into(), deleted: false } },
        Op::List { name: "data".into(), deleted: false },
        Op::Hash { name: "n".into(), algorithm: "blake3".into(), deleted: false },
        Op::Defrag {
            sources: src.clone(),
            target: None,
            algorithm: Some("sha256".into()),
            namespace: Some("data".into()),
            deleted: false,
        },
        Op::Gather { sources: src, namespace: None, deleted: true },
        Op::Quota,
        Op::Stats,
        Op::CacheInvalidate { name: "".into(), deleted: false },
        Op::Stores,
        Op::Ping,
    ]
}

fn every_reply() -> Vec<Reply> {
    let info = ItemInfo { name: "x".into(), exists: true, size: 3, directory: false, atime: 1.5, mtime: 2.5 };
    let mut stats = borgstore_ipc::Stats::new();
    stats.insert("load_calls".into(), StatValue::Int(3));
    stats.insert("load_time".into(), StatValue::Float(0.25));
    stats.insert("cache_disabled".into(), StatValue::Bool(true));
    let mut replies = vec![
        Reply::Ok,
        Reply::Info(info.clone()),
        Reply::Data(vec![9; 100]),
        Reply::ListChunk(vec![info.clone(), info]),
        Reply::ListEnd,
        Reply::Text("abc".into()),
        Reply::Quota(Quota { limit: -1, usage: -1 }),
        Reply::Stats(stats),
        Reply::Stores(vec![StoreSummary { name: "main".into(), url_scheme: "file".into() }]),
        Reply::Pong,
    ];
    replies.extend(ErrorKind::ALL.iter().map(|k| Reply::Err(Error::new(*k, "why"))));
    replies
}

#[test]
fn every_message_round_trips() {
    for (i, op) in every_op().into_iter().enumerate() {
        let req = Request { id: i as u64, store: "s".into(), op };
        let frame = encode_frame(&req, MAX).unwrap();
        assert_eq!(decode_body::<Request>(&frame[4..]).unwrap(), req);
    }
    for (i, body) in every_reply().into_iter().enumerate() {
        let resp = Response { id: i as u64, body };
        let frame = encode_frame(&resp, MAX).unwrap();
        assert_eq!(decode_body::<Response>(&frame[4..]).unwrap(), resp);
    }
    for hs in [
        HandshakeReply::Accepted(Welcome { version: 1, server_name: "d".into(), max_frame: MAX }),
        HandshakeReply::Refused(Error::invalid("no")),
    ] {
        let frame = encode_frame(&hs, MAX).unwrap();
        assert_eq!(decode_body::<HandshakeReply>(&frame[4..]).unwrap(), hs);
    }
}

#[test]
fn limits_and_trailing_bytes() {
    let big = Request { id: 1, store: "s".into(), op: Op::Store { name: "n".into(), value: vec![0; 5000].into() } };
    assert!(matches!(encode_frame(&big, 4096), Err(FrameError::TooLarge { .. })));
    assert!(matches!(read_header(&5000u32.to_le_bytes(), 4096), Err(FrameError::TooLarge { .. })));
    let mut frame = encode_frame(&Hello::new("x"), MAX).unwrap();
    frame.push(0);
    assert!(matches!(decode_body::<Hello>(&frame[4..]), Err(FrameError::Malformed(_))));
    let frame = encode_frame(&Hello::new("x"), MAX).unwrap();
    assert!(decode_body::<Hello>(&frame[4..frame.len() - 1]).is_err(), "truncated body");
    // The store value announces 2^60 bytes in a tiny body: an error, not an allocation.
    let mut evil = encode_frame(
        &Request { id: 1, store: "s".into(), op: Op::Store { name: "n".into(), value: Default::default() } },
        MAX,
    )
    .unwrap()[4..]
        .to_vec();
    evil.pop();
    evil.extend([253, 0, 0, 0, 0, 0, 0, 0, 16]);
    assert!(decode_body::<Request>(&evil).is_err());
}

fn arb_request() -> impl Strategy<Value = Request> {
    let ops = every_op();
    (any::<u64>(), "[a-z]{0,12}", 0..ops.len(), proptest::collection::vec(any::<u8>(), 0..3000), "[a-z/0-9]{0,40}")
        .prop_map(move |(id, store, i, bytes, name)| {
            let op = match ops[i].clone() {
                Op::Store { .. } => Op::Store { name, value: bytes.into() },
                Op::Info { deleted, .. } => Op::Info { name, deleted },
                other => other,
            };
            Request { id, store, op }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_body::<Request>(&body);
        let _ = decode_body::<Response>(&body);
        let _ = decode_body::<Hello>(&body);
        let _ = decode_body::<HandshakeReply>(&body);
    }

    /// Flipping bytes of valid frames gives errors or other valid messages, never a panic.
    #[test]
    fn flipped_bytes_never_panic(req in arb_request(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut frame = encode_frame(&req, MAX).unwrap();
        for (at, x) in flips {
            let i = at % frame.len();
            frame[i] ^= x | 1;
        }
        let header: [u8; 4] = frame[..4].try_into().unwrap();
        if let Ok(len) = read_header(&header, MAX) {
            let _ = decode_body::<Request>(&frame[4..(4 + len as usize).min(frame.len())]);
        }
        let _ = decode_body::<Request>(&frame[4..]);
    }
}

#[test]
fn listing_chunks_of_every_length_round_trip() {
    // Decoded listings take more room than their encoding (a String per name): every
    // chunk length up to a full chunk must decode, whatever its encoded size is
    // (bodies just under a decode limit once failed with "LimitExceeded").
    for n in 0..=borgstore_ipc::protocol::LIST_CHUNK {
        let items: Vec<ItemInfo> = (0..n)
            .map(|i| ItemInfo {
                name: format!("{:064x}", i as u128 * 0x9e37_79b9_7f4a_7c15),
                exists: true,
                size: i as u64 * 4096,
                directory: false,
                atime: 1.7e9 + i as f64,
                mtime: 1.7e9,
            })
            .collect();
        let msg = Response { id: n as u64, body: Reply::ListChunk(items) };
        let frame = encode_frame(&msg, u32::MAX).unwrap();
        assert_eq!(decode_body::<Response>(&frame[4..]).unwrap(), msg, "{n} items");
    }
}

#[test]
fn a_data_reply_head_and_its_value_are_the_whole_frame() {
    for id in [0u64, 1, 250, 251, 65_535, 1 << 40, u64::MAX] {
        for len in [0usize, 1, 250, 251, 65_535, 65_536, 1 << 20, (8 << 20) + 3] {
            let value: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let whole = encode_frame(&Response { id, body: Reply::Data(value.clone()) }, u32::MAX).unwrap();
            let mut parts = borgstore_ipc::codec::data_reply_head(id, len, u32::MAX).unwrap();
            parts.extend_from_slice(&value);
            assert!(parts == whole, "id {id}, {len} bytes: head + value differ from the encoded frame");
        }
    }
    let head = borgstore_ipc::codec::data_reply_head(1, 2000, 1000);
    assert!(matches!(head, Err(FrameError::TooLarge { max: 1000, .. })));
}

#[test]
fn a_data_reply_head_is_read_back_from_its_frame() {
    use borgstore_ipc::codec::{data_reply_of, DATA_HEAD_MAX};
    for id in [0u64, 251, 1 << 40, u64::MAX] {
        for len in [0usize, 251, 65_536, (1 << 20) + 7] {
            let frame = encode_frame(&Response { id, body: Reply::Data(vec![9; len]) }, u32::MAX).unwrap();
            let body = &frame[4..];
            let (got_id, head, got_len) = data_reply_of(&body[..DATA_HEAD_MAX.min(body.len())]).unwrap();
            assert_eq!((got_id, got_len as usize, head + len), (id, len, body.len()));
        }
    }
    let other = encode_frame(&Response { id: 5, body: Reply::Text("x".repeat(300)) }, u32::MAX).unwrap();
    assert_eq!(data_reply_of(&other[4..4 + DATA_HEAD_MAX]), None, "not a Data reply");
    assert_eq!(data_reply_of(&[0xff]), None, "too short to tell");
}

#[test]
fn a_store_request_head_and_its_value_are_the_whole_frame() {
    use borgstore_ipc::codec::store_request_head;
    for id in [0u64, 250, 251, 1 << 40, u64::MAX] {
        for (store, name) in [("", ""), ("s", "data/0123"), ("a-store", &"n".repeat(300)[..])] {
            for len in [0usize, 1, 250, 251, 65_536, (1 << 20) + 3] {
                let value: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let op = Op::Store { name: name.into(), value: value.clone().into() };
                let whole = encode_frame(&Request { id, store: store.into(), op }, u32::MAX).unwrap();
                let mut parts = store_request_head(id, store, name, len, u32::MAX).unwrap();
                parts.extend_from_slice(&value);
                assert!(parts == whole, "id {id}, {store:?}/{name:?}, {len} bytes: head + value differ");
            }
        }
    }
    assert!(matches!(store_request_head(1, "s", "n", 2000, 1000), Err(FrameError::TooLarge { max: 1000, .. })));
}

#[test]
fn a_store_request_is_read_back_from_its_frame_and_nothing_else_is() {
    use borgstore_ipc::codec::store_request_of;
    for len in [0usize, 251, 70_000] {
        let value: Vec<u8> = (0..len).map(|i| (i % 7) as u8).collect();
        let op = Op::Store { name: "data/ab".into(), value: value.clone().into() };
        let frame = encode_frame(&Request { id: 77, store: "st".into(), op }, u32::MAX).unwrap();
        let body = &frame[4..];
        let head = store_request_of(body).unwrap();
        assert_eq!((head.id, head.store.as_str(), head.name.as_str()), (77, "st", "data/ab"));
        assert_eq!(&body[head.value_at..], &value[..]);
        // Cut short or with bytes after the value: not a store request to slice.
        if len > 0 {
            assert_eq!(store_request_of(&body[..body.len() - 1]), None);
        }
        let mut longer = body.to_vec();
        longer.push(0);
        assert_eq!(store_request_of(&longer), None);
    }
    for op in every_op().into_iter().filter(|op| !matches!(op, Op::Store { .. })) {
        let frame = encode_frame(&Request { id: 1, store: "s".into(), op: op.clone() }, u32::MAX).unwrap();
        assert_eq!(store_request_of(&frame[4..]), None, "{op:?} is not a store");
    }
    assert_eq!(store_request_of(&[]), None);
    assert_eq!(store_request_of(&[0xff; 40]), None);
}

proptest! {
    #[test]
    fn store_request_of_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = borgstore_ipc::codec::store_request_of(&bytes);
    }
}
