//! The routes of REST-API.md: one dispatcher that picks the store, checks Accept and
//! credentials, validates the name and turns the request into one store operation.

use super::{auth, metrics, range, status, Mount, RestApp};
use crate::actor::registry::StoreEntry;
use crate::backends::DefragTarget;
use crate::hashing::HashAlgorithm;
use crate::store::{RawOp, RawReply};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use borgstore_ipc::protocol::{Op, Reply};
use borgstore_ipc::{Error, ErrorKind, Result, Source};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// The media type every request must accept.
pub const ACCEPT: &str = "application/vnd.x.borgstore.rest.v1";

/// Every request lands here.
pub async fn dispatch(req: HttpRequest, body: web::Bytes, app: web::Data<RestApp>) -> HttpResponse {
    // Not a store path: no store name starts with '-' (only set for Mount::PerStore).
    if app.metrics && req.uri().path() == metrics::PATH {
        return metrics::respond(&req, &app).await;
    }
    if req.headers().get(header::ACCEPT).map(|v| v.as_bytes()) != Some(ACCEPT.as_bytes()) {
        return text(StatusCode::NOT_ACCEPTABLE, "Not Acceptable: unsupported or missing Accept header");
    }
    let raw_path = req.uri().path();
    let Some(path) = percent_encoding::percent_decode_str(raw_path).decode_utf8().ok() else {
        return text(StatusCode::BAD_REQUEST, "the request path is not valid UTF-8");
    };
    let (entry, rest) = match &app.mount {
        Mount::Root(store) => match app.registry.get(store) {
            Some(e) => (e, path.as_ref()),
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
                None => return text(StatusCode::NOT_FOUND, "no such store"),
            }
        }
    };
    if let Some(creds) = app.credentials.get(&entry.name) {
        if !creds.accepts(req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes())) {
            tracing::warn!(store = %entry.name, method = %req.method(), "REST request refused: bad or missing credentials");
            return HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, auth::CHALLENGE))
                .content_type("text/plain")
                .body("Unauthorized");
        }
    }
    // "/" and "" address the root; one leading slash and one trailing slash (the list
    // marker) belong to the protocol, anything else is part of the name and validated.
    let listing = rest.ends_with('/');
    let name = rest.strip_prefix('/').unwrap_or(rest);
    let name = if listing { name.strip_suffix('/').unwrap_or(name) } else { name };
    let query: HashMap<String, String> = match serde_urlencoded::from_str(req.query_string()) {
        Ok(q) => q,
        Err(_) => return text(StatusCode::BAD_REQUEST, "malformed query string"),
    };
    let result = route(&req, entry, name, listing, &query, body).await;
    match result {
        Ok(resp) => resp,
        Err(e) => {
            let code = status::of(e.kind);
            if code == StatusCode::INTERNAL_SERVER_ERROR {
                tracing::warn!(store = %entry.name, method = %req.method(), "REST request failed: {}", e.message);
            }
            text(code, &status::message(e.kind, &e.message))
        }
    }
}

fn text(code: StatusCode, msg: &str) -> HttpResponse {
    HttpResponse::build(code).content_type("text/plain; charset=utf-8").body(msg.to_string())
}

fn ok() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn param<'a>(query: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    query.get(key).map(String::as_str).filter(|v| !v.is_empty())
}

fn need_name(name: &str, what: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(format!("{what} needs an object name in the path")));
    }
    Ok(())
}

fn sources(body: &[u8]) -> Result<Vec<Source>> {
    let list: Vec<(String, i64, u64)> = serde_json::from_slice(body)
        .map_err(|e| Error::invalid(format!("the body must be a JSON list of [name, offset, size]: {e}")))?;
    Ok(list.into_iter().map(|(name, offset, size)| Source { name, offset, size }).collect())
}

async fn exec(entry: &StoreEntry, op: Op) -> Result<()> {
    match entry.exec(op).await? {
        crate::actor::store_actor::Outcome::Reply(Reply::Err(e)) => Err(e),
        _ => Ok(()),
    }
}

async fn route(
    req: &HttpRequest,
    entry: &StoreEntry,
    name: &str,
    listing: bool,
    query: &HashMap<String, String>,
    body: web::Bytes,
) -> Result<HttpResponse> {
    let cmd = param(query, "cmd");
    let raw = |op| entry.raw(op);
    let method = req.method();
    if method == Method::POST {
        match cmd {
            Some("create") => exec(entry, Op::Create).await.map(|_| ok()),
            Some("mkdir") => raw(RawOp::Mkdir(name.into())).await.map(|_| ok()),
            Some("move") => match (param(query, "current"), param(query, "new")) {
                (Some(current), Some(new)) => {
                    raw(RawOp::Move { current: current.into(), new: new.into() }).await.map(|_| ok())
                }
                _ => Err(Error::invalid("move needs the current and new names")),
            },
            Some("hash") => {
                need_name(name, "hash")?;
                let algorithm: HashAlgorithm = param(query, "algorithm").unwrap_or("sha256").parse()?;
                match raw(RawOp::Hash { name: name.into(), algorithm }).await? {
                    RawReply::Text(digest) => Ok(HttpResponse::Ok().content_type("text/plain").body(digest)),
                    _ => Err(Error::backend("internal: unexpected reply to hash")),
                }
            }
            Some("quota") => match raw(RawOp::Quota).await? {
                RawReply::Quota(q) => Ok(HttpResponse::Ok()
                    .content_type("application/json")
                    .body(serde_json::json!({"limit": q.limit, "usage": q.usage}).to_string())),
                _ => Err(Error::backend("internal: unexpected reply to quota")),
            },
            Some("gather") => match raw(RawOp::Gather(sources(&body)?)).await? {
                RawReply::Data(d) => Ok(HttpResponse::Ok().content_type("application/octet-stream").body(d)),
                _ => Err(Error::backend("internal: unexpected reply to gather")),
            },
            Some("defrag") => {
                let target = match (param(query, "target"), param(query, "algorithm")) {
                    (Some(t), _) => DefragTarget::Name(t.into()),
                    (None, Some(a)) => DefragTarget::Hashed {
                        algorithm: a.parse()?,
                        namespace: param(query, "namespace").unwrap_or("").to_string(),
                        levels: match param(query, "levels") {
                            Some(l) => l.parse().map_err(|_| Error::invalid("levels must be a small number"))?,
                            None => 0,
                        },
                    },
                    (None, None) => return Err(Error::invalid("defrag needs a target or an algorithm")),
                };
                match raw(RawOp::Defrag { sources: sources(&body)?, target }).await? {
                    RawReply::Text(t) => Ok(HttpResponse::Ok().content_type("text/plain").body(t)),
                    _ => Err(Error::backend("internal: unexpected reply to defrag")),
                }
            }
            Some(other) => Err(Error::invalid(format!("unknown command {:?}", other.escape_debug().to_string()))),
            None => {
                need_name(name, "store")?;
                if let Some(expected) = req.headers().get("x-content-hash-sha256") {
                    let got = hex::encode(Sha256::digest(&body));
                    if !expected.as_bytes().eq_ignore_ascii_case(got.as_bytes()) {
                        return Ok(text(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "Content hash verification failed, please retry",
                        ));
                    }
                }
                raw(RawOp::Store { name: name.into(), value: body.clone() }).await.map(|_| ok())
            }
        }
    } else if method == Method::DELETE {
        match cmd {
            Some("destroy") => exec(entry, Op::Destroy).await.map(|_| ok()),
            Some("rmdir") => raw(RawOp::Rmdir(name.into())).await.map(|_| ok()),
            Some(other) => Err(Error::invalid(format!("unknown command {:?}", other.escape_debug().to_string()))),
            None => {
                need_name(name, "delete")?;
                raw(RawOp::Delete(name.into())).await.map(|_| ok())
            }
        }
    } else if method == Method::HEAD {
        match raw(RawOp::Info(name.into())).await? {
            RawReply::Info(info) if info.exists => Ok(HttpResponse::Ok()
                .insert_header(("X-BorgStore-Is-Directory", if info.directory { "true" } else { "false" }))
                .insert_header(("X-BorgStore-Atime", float(info.atime)))
                .insert_header(("X-BorgStore-Mtime", float(info.mtime)))
                .body(HeadBody(info.size))),
            RawReply::Info(_) => Err(Error::new(ErrorKind::ObjectNotFound, format!("{} not found", shown(name)))),
            _ => Err(Error::backend("internal: unexpected reply to info")),
        }
    } else if method == Method::GET {
        if listing {
            return match raw(RawOp::List(name.into())).await? {
                RawReply::List(items) => {
                    let json: Vec<_> = items
                        .iter()
                        .map(|i| {
                            serde_json::json!({
                                "name": i.name, "size": i.size, "directory": i.directory,
                                "atime": i.atime, "mtime": i.mtime,
                            })
                        })
                        .collect();
                    Ok(HttpResponse::Ok()
                        .content_type("application/json")
                        .body(serde_json::Value::from(json).to_string()))
                }
                _ => Err(Error::backend("internal: unexpected reply to list")),
            };
        }
        need_name(name, "load")?;
        let range_header = match req.headers().get(header::RANGE) {
            Some(v) => Some(v.to_str().map_err(|_| Error::invalid("the Range header is not ASCII"))?),
            None => None,
        };
        let (offset, size) = match range_header {
            Some(h) => range::parse(h)?,
            None => (0, None),
        };
        match raw(RawOp::Load { name: name.into(), offset, size }).await? {
            RawReply::Data(d) => {
                let code = if range_header.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
                Ok(HttpResponse::build(code).content_type("application/octet-stream").body(d))
            }
            _ => Err(Error::backend("internal: unexpected reply to load")),
        }
    } else {
        Ok(HttpResponse::MethodNotAllowed().insert_header((header::ALLOW, "GET, HEAD, POST, DELETE")).finish())
    }
}

/// The body of a HEAD answer: announces `Content-Length: n` and sends nothing (for HEAD
/// the HTTP encoder writes no body bytes; the length header comes from this size).
struct HeadBody(u64);

impl actix_web::body::MessageBody for HeadBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> actix_web::body::BodySize {
        actix_web::body::BodySize::Sized(self.0)
    }

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<web::Bytes, Self::Error>>> {
        std::task::Poll::Ready(None)
    }
}

fn shown(name: &str) -> String {
    crate::names::shown(name)
}

/// Times as Python prints floats: always with a fractional part.
fn float(t: f64) -> String {
    if t.fract() == 0.0 && t.abs() < 1e16 {
        format!("{t:.1}")
    } else {
        t.to_string()
    }
}
