//! The first exchange of a connection: the client's [`Hello`] (magic, version), our
//! [`HandshakeReply`]. A hello frame may be at most [`limits::HANDSHAKE_MAX`] bytes and
//! must arrive within [`HANDSHAKE_TIMEOUT`]; a peer granted no store at all is refused
//! here, so it never gets to send a request.

use super::framing::{FrameCodec, Incoming};
use crate::access::{Caller, Door, LocalPeer};
use crate::actor::Registry;
use crate::limits;
use borgstore_ipc::codec::encode_frame;
use borgstore_ipc::codec::{decode_body, FrameError};
use borgstore_ipc::protocol::{HandshakeReply, Hello, Welcome, MAGIC, PROTOCOL_VERSION};
use borgstore_ipc::{Error, ErrorKind};
use futures::{Stream, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::codec::FramedRead;

/// How long a client may take to say hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Read the hello from `frames`, answer on `reply_to`; true when the client may go on.
/// The codec's limit is the handshake's while this runs and `max_frame` after.
pub async fn handshake<R, W>(
    frames: &mut FramedRead<R, FrameCodec>,
    reply_to: &mut W,
    peer: &LocalPeer,
    registry: &Registry,
    server_name: &str,
    max_frame: u32,
) -> bool
where
    FramedRead<R, FrameCodec>: Stream<Item = Result<Incoming, FrameError>> + Unpin,
    W: AsyncWrite + Unpin,
{
    frames.decoder_mut().set_max(limits::HANDSHAKE_MAX);
    let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_hello(frames)).await {
        Ok(Some(hello)) => hello,
        Ok(None) => return false,
        Err(_) => Err(Error::invalid("handshake timed out")),
    };
    frames.decoder_mut().set_max(max_frame);
    let verdict = judge(hello, peer, registry);
    let reply = match &verdict {
        Ok(()) => HandshakeReply::Accepted(Welcome {
            version: PROTOCOL_VERSION,
            server_name: server_name.to_string(),
            max_frame,
        }),
        Err(e) => HandshakeReply::Refused(e.clone()),
    };
    let Ok(frame) = encode_frame(&reply, max_frame) else { return false };
    reply_to.write_all(&frame).await.is_ok() && verdict.is_ok()
}

/// The hello, or why it is not one; None when the peer left without a word.
async fn read_hello<R>(frames: &mut FramedRead<R, FrameCodec>) -> Option<Result<Hello, Error>>
where
    FramedRead<R, FrameCodec>: Stream<Item = Result<Incoming, FrameError>> + Unpin,
{
    loop {
        return match frames.next().await? {
            Ok(Incoming::Announced(_)) => continue,
            Ok(Incoming::Frame(body)) => Some(decode_body::<Hello>(&body).map_err(Error::from)),
            Err(FrameError::TooLarge { len, max }) => Some(Err(Error::invalid(format!(
                "handshake frame of {len} bytes exceeds the limit of {max} bytes (not a borgstore IPC client?)"
            )))),
            Err(e) => Some(Err(Error::from(e))),
        };
    }
}

fn judge(hello: Result<Hello, Error>, peer: &LocalPeer, registry: &Registry) -> Result<(), Error> {
    let h = hello?;
    let caller = Caller { door: Door::Socket, peer: Some(peer), authorization: None, client_cert: None };
    if h.magic != MAGIC {
        return Err(Error::invalid("not a borgstore IPC client (bad magic)"));
    }
    if h.version != PROTOCOL_VERSION {
        return Err(Error::invalid(format!(
            "unsupported IPC protocol version {} (this daemon speaks {PROTOCOL_VERSION})",
            h.version
        )));
    }
    if registry.granted(&caller).next().is_none() {
        tracing::warn!(uid = peer.uid, gid = peer.gid, pid = ?peer.pid, client = %h.client_name.escape_debug(), "refused a client granted no store");
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!("uid {} is not granted any store of this daemon", peer.uid),
        ));
    }
    tracing::debug!(uid = peer.uid, pid = ?peer.pid, client = %h.client_name.escape_debug(), "client connected");
    Ok(())
}
