//! The one dispatcher every REST request lands in: it judges the request from its head
//! (method, Accept, store, caller, query), hands it to [`super::route`] for the command,
//! and turns an error into the status and words Python's server answers with. Bodies
//! are read only once the command asks for them (see [`super::body`]).

use super::route::{Request, Route};
use super::{metrics, status, Connection, Mount, RestApp};
use crate::access::{Caller, Door, Refusal, CHALLENGE};
use crate::limits;
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use std::collections::HashMap;

/// The media type every request must accept.
pub const ACCEPT: &str = "application/vnd.x.borgstore.rest.v1";

/// Every request lands here.
///
/// A request whose body is not (fully) read is answered at once; actix-web then closes
/// the connection instead of reading the rest. Over `--stdio` the one connection is the
/// whole session, so there the unread rest is read and dropped instead (without keeping
/// it), and the session goes on.
pub async fn dispatch(req: HttpRequest, mut payload: web::Payload, app: web::Data<RestApp>) -> HttpResponse {
    let response = handle(&req, &mut payload, &app).await;
    if app.drain_unread {
        while let Ok(Some(Ok(_))) = tokio::time::timeout(limits::BODY_IDLE, payload.next()).await {}
        return response;
    }
    // actix-web reads a dropped chunked body to its end before the next request; keeping
    // the payload until the answer is out makes it close the connection instead, as it
    // does for an unread body of known length.
    response.map_body(|_, body| HoldPayload { body, _payload: payload }).map_into_boxed_body()
}

/// A response body that keeps its request's payload alive until the response is sent.
struct HoldPayload {
    body: actix_web::body::BoxBody,
    _payload: web::Payload,
}

impl actix_web::body::MessageBody for HoldPayload {
    type Error = <actix_web::body::BoxBody as actix_web::body::MessageBody>::Error;

    fn size(&self) -> actix_web::body::BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<web::Bytes, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_next(cx)
    }
}

async fn handle(req: &HttpRequest, payload: &mut web::Payload, app: &RestApp) -> HttpResponse {
    // Not a store path: no store name starts with '-' (only set for Mount::PerStore).
    if app.metrics && req.uri().path() == metrics::PATH {
        return metrics::respond(req, app).await;
    }
    if ![Method::GET, Method::HEAD, Method::POST, Method::DELETE].contains(req.method()) {
        // Python's http.server answers a method it has no handler for before anything else.
        return text(StatusCode::NOT_IMPLEMENTED, &format!("Unsupported method ('{}')", req.method()));
    }
    if req.headers().get(header::ACCEPT).map(|v| v.as_bytes()) != Some(ACCEPT.as_bytes()) {
        return text(StatusCode::NOT_ACCEPTABLE, "Not Acceptable: unsupported or missing Accept header");
    }
    // The path as Python's server takes it: not percent-decoded (a `%` is part of the
    // name), raw non-ASCII bytes as Latin-1 characters (see wire).
    let raw_target = req.headers().get(super::wire::RAW_TARGET).map(|v| v.as_bytes());
    let path = super::wire::request_path(req.uri().path(), raw_target);
    let (entry, rest) = match &app.mount {
        Mount::Root(store) => match app.registry.get(store) {
            Some(e) => (e, path.as_str()),
            None => return text(StatusCode::INTERNAL_SERVER_ERROR, "store is not configured"),
        },
        Mount::PerStore => {
            let trimmed = path.strip_prefix('/').unwrap_or(&path);
            let (store, rest) = match trimmed.find('/') {
                Some(i) => (&trimmed[..i], &trimmed[i..]),
                None => (trimmed, "/"),
            };
            match app.registry.get(store) {
                Some(e) => (e, rest),
                None => return no_such_store(),
            }
        }
    };
    // The one access decision, from what the connection and the head say.
    let conn = req.conn_data::<Connection>().cloned().unwrap_or(Connection {
        door: Door::Rest,
        peer: None,
        client_cert: None,
    });
    if conn.peer.is_none() && conn.door == Door::RestSocket {
        tracing::warn!("cannot read the credentials of a REST socket peer; treating it as unknown");
    }
    let authorization = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let caller =
        Caller { door: conn.door, peer: conn.peer.as_ref(), authorization, client_cert: conn.client_cert.as_deref() };
    // A password that takes a slow hash (bcrypt, SHA-crypt) is verified on a blocking
    // thread, a few at a time, so wrong passwords cannot take the workers; a right one is
    // remembered and the decision below finds it.
    // The whole decision uses one snapshot of the store's grants: a request that
    // straddles a reload is judged by the old grants or by the new ones, never verified
    // by one and decided by the other (whose password cache has not seen it).
    let grants = entry.grants();
    if grants.needs_slow_verification(conn.door, authorization) {
        static SLOW: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
        let header = authorization.map(<[u8]>::to_vec);
        let _turn = SLOW.acquire().await;
        let slow = grants.clone();
        let _ = web::block(move || slow.verify_slowly(header.as_deref())).await;
    }
    if let Some(cn) = caller.client_cert {
        tracing::debug!(store = %entry.name, "REST caller with TLS client certificate CN={cn:?}");
    }
    let principal = match grants.decide(&caller) {
        Ok(p) => p,
        Err(refusal) => return refused(refusal, entry, &conn, req),
    };
    // "/" and "" address the root; one leading slash and one trailing slash (the list
    // marker) belong to the protocol, anything else is part of the name and validated.
    // As Python's server: the name is the path without any leading or trailing slashes,
    // and a trailing slash asks for a listing.
    let listing = rest.ends_with('/');
    let name = rest.trim_matches('/');
    // Of a repeated query parameter the first value counts (Python's parse_qs()[0]).
    let mut query: HashMap<String, String> = HashMap::new();
    let pairs = match raw_target {
        Some(raw) => Ok(super::wire::raw_query(raw)),
        None => serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string()),
    };
    match pairs {
        Ok(pairs) => {
            for (k, v) in pairs {
                query.entry(k).or_insert(v);
            }
        }
        Err(_) => return text(StatusCode::BAD_REQUEST, "malformed query string"),
    }
    let who = principal.who(conn.door);
    let request = Request { http: req, entry, app, name, listing, query: &query, who };
    let result = match Route::parse(&request) {
        Ok(route) => route.apply(&request, payload).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(resp) => resp,
        Err(e) => {
            let code = status::of(e.kind);
            if code == StatusCode::INTERNAL_SERVER_ERROR {
                // The detail stays in our log; clients get what Python's server says.
                tracing::warn!(store = %entry.name, method = %req.method(), "REST request failed: {}", e.message);
                return text(code, "Internal Server Error");
            }
            text(code, &status::message(e.kind, &e.message))
        }
    }
}

/// The answer to a caller the access decision turned away.
fn refused(refusal: Refusal, entry: &crate::actor::StoreEntry, conn: &Connection, req: &HttpRequest) -> HttpResponse {
    let uid = conn.peer.as_ref().map(|p| p.uid);
    let response = match refusal {
        Refusal::Unauthenticated => {
            tracing::warn!(store = %entry.name, door = %conn.door, uid, method = %req.method(), "REST request refused: bad or missing credentials");
            HttpResponse::Unauthorized().insert_header((header::WWW_AUTHENTICATE, CHALLENGE)).body("Unauthorized")
        }
        Refusal::NotGranted(why) => {
            tracing::warn!(store = %entry.name, door = %conn.door, uid, method = %req.method(), "REST request refused: {why}");
            text(StatusCode::FORBIDDEN, &why)
        }
        Refusal::NotServedHere => no_such_store(),
    };
    response
}

fn no_such_store() -> HttpResponse {
    text(StatusCode::NOT_FOUND, "no such store")
}

/// A plain-text answer.
pub fn text(code: StatusCode, msg: &str) -> HttpResponse {
    HttpResponse::build(code).content_type("text/plain; charset=utf-8").body(msg.to_string())
}

/// 200 without a body.
pub fn ok() -> HttpResponse {
    HttpResponse::Ok().finish()
}
