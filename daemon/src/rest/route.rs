//! The route table of REST-API.md: which command a request is ([`Route::parse`]) and
//! how its answer looks ([`Route::apply`]).
//!
//! Parsing looks at the method, `cmd=`, the name and the query only, and makes its
//! checks in the order Python's server makes them (clients see the first refusal).
//! Bodies are read in `apply`, only by the routes that take one, and only once the
//! store asks for them. Each route runs one typed command through the store's actor:
//! [`crate::commands::nested`] for the backend-level calls REST speaks,
//! [`crate::commands::lifecycle`] for create and destroy.
//!
//! Adding a route: a variant, its arm in `parse`, its arm in `apply`.

use super::body::{body_length, json_body, pump, reserve, Early, Pumped};
use super::handlers::ok;
use super::sources::sources;
use super::{range, RestApp};
use crate::actor::registry::StoreEntry;
use crate::actor::StoreHandle;
use crate::backends::body::{Body, BodyStream, STREAM_ABOVE};
use crate::backends::value::Value;
use crate::backends::DefragTarget;
use crate::commands::{lifecycle, nested};
use crate::limits::Reservation;
use crate::names::DEL_SUFFIX;
use crate::policy::Who;
use actix_web::body::SizedStream;
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use borgstore_ipc::{Error, ItemInfo, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// A request's answer when a body check turned it away early.
macro_rules! early {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(early) => return Ok(Early::response(early)),
        }
    };
}

/// What a route looks at: the request's head, its store, the name and query.
pub struct Request<'a> {
    /// The HTTP request (headers, method).
    pub http: &'a HttpRequest,
    /// The store it addresses, already granted to the caller.
    pub entry: &'a StoreEntry,
    /// The front end's settings and registry.
    pub app: &'a RestApp,
    /// The name: the path without the store and without leading or trailing slashes.
    pub name: &'a str,
    /// The path ended in `/`: a listing.
    pub listing: bool,
    /// Query parameters (of a repeated one, the first).
    pub query: &'a HashMap<String, String>,
    /// The caller, as the access decision named it, with its profile.
    pub who: Arc<Who>,
}

/// The store's actor, running commands for the request's caller.
struct As<'a> {
    handle: &'a StoreHandle,
    who: &'a Arc<Who>,
}

impl As<'_> {
    async fn run<C: crate::commands::Command>(&self, command: C) -> Result<C::Output> {
        self.handle.run_as(command, self.who.clone()).await
    }
}

impl Request<'_> {
    fn param(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }
}

/// One request, parsed: the command it runs and what its answer needs.
pub enum Route {
    /// `POST ?cmd=create`
    Create,
    /// `DELETE ?cmd=destroy`
    Destroy,
    /// `POST ?cmd=quota`
    Quota,
    /// `POST ?cmd=sync` (our extension): answered once every value acknowledged before
    /// is on the primary backend (write-behind), at once without write-behind.
    Sync,
    /// `POST name?cmd=mkdir`
    Mkdir(nested::Mkdir),
    /// `DELETE name?cmd=rmdir`
    Rmdir(nested::Rmdir),
    /// `GET name/`
    List(nested::List),
    /// `HEAD name`
    Info(nested::Info),
    /// `GET name`, with a `Range` header when `partial`
    Load {
        /// The read.
        load: nested::Load,
        /// Answer 206 (a range was asked for).
        partial: bool,
    },
    /// `DELETE name`
    Delete(nested::Delete),
    /// `POST ?cmd=move&current=..&new=..`
    Move(nested::Move),
    /// `POST name?cmd=hash&algorithm=..`
    Hash(nested::Hash),
    /// `POST ?cmd=gather` with the sources as the body
    Gather,
    /// `POST ?cmd=defrag&target=..|algorithm=..` with the sources as the body
    Defrag(DefragTarget),
    /// `POST name` with the value as the body
    Store {
        /// The nested name.
        name: String,
    },
}

impl Route {
    /// The route of a request, or why it has none.
    pub fn parse(r: &Request) -> Result<Route> {
        let name = r.name.to_string();
        let method = r.http.method();
        let cmd = r.param("cmd");
        if method == Method::POST {
            Ok(match cmd {
                Some("create") => Route::Create,
                Some("mkdir") => Route::Mkdir(nested::Mkdir { name }),
                Some("move") => match (r.param("current"), r.param("new")) {
                    (Some(current), Some(new)) => {
                        Route::Move(nested::Move { current: current.into(), new: new.into() })
                    }
                    _ => return Err(Error::invalid("Missing current or new name for move")),
                },
                Some("hash") => {
                    need_name(r.name, "Missing name for hash")?;
                    Route::Hash(nested::Hash { name, algorithm: r.param("algorithm").unwrap_or("sha256").parse()? })
                }
                Some("quota") => Route::Quota,
                Some("sync") => Route::Sync,
                Some("gather") => Route::Gather,
                Some("defrag") => Route::Defrag(defrag_target(r)?),
                // As Python's server: an unknown command on a name is a store, on the root a bad request.
                _ => {
                    need_name(r.name, "Bad Request")?;
                    crate::names::validate_item_name(r.name)?;
                    Route::Store { name }
                }
            })
        } else if method == Method::DELETE {
            Ok(match cmd {
                Some("destroy") => Route::Destroy,
                Some("rmdir") => Route::Rmdir(nested::Rmdir { name }),
                // As Python's server: an unknown command on a name is a delete.
                _ => {
                    need_name(r.name, "Bad Request")?;
                    Route::Delete(nested::Delete { name })
                }
            })
        } else if method == Method::HEAD {
            Ok(Route::Info(nested::Info { name }))
        } else if method == Method::GET {
            if r.listing {
                return Ok(Route::List(nested::List { name }));
            }
            need_name(r.name, "Bad Request")?;
            let range_header = match r.http.headers().get(header::RANGE) {
                Some(v) => Some(v.to_str().map_err(|_| Error::invalid("the Range header is not ASCII"))?),
                None => None,
            };
            let (offset, size) = match range_header {
                Some(h) => range::parse(h)?,
                None => (0, None),
            };
            Ok(Route::Load { load: nested::Load { name, offset, size }, partial: range_header.is_some() })
        } else {
            // The dispatcher answers other methods before routing.
            Err(Error::invalid(format!("Unsupported method ('{method}')")))
        }
    }

    /// Run the route's command and make its answer. Refusals about the body (length,
    /// budget) are answers too (`Ok`), with their own status.
    pub async fn apply(self, r: &Request<'_>, payload: &mut web::Payload) -> Result<HttpResponse> {
        let store = As { handle: r.entry.handle(), who: &r.who };
        let profile = &r.who.profile;
        match self {
            Route::Create => store.run(lifecycle::Create).await.map(|()| ok()),
            Route::Destroy => store.run(lifecycle::Destroy).await.map(|()| ok()),
            Route::Mkdir(c) => store.run(c).await.map(|()| ok()),
            Route::Rmdir(c) => store.run(c).await.map(|()| ok()),
            // A delete the caller's profile quarantines (borg's own soft delete of such
            // an item too) becomes a soft delete kept for the store's window.
            Route::Move(c) if c.new.strip_suffix(DEL_SUFFIX) == Some(&c.current) && profile.quarantines(&c.current) => {
                store.run(nested::Quarantine { name: c.current }).await.map(|()| ok())
            }
            Route::Delete(c) if profile.quarantines(&c.name) => {
                store.run(nested::Quarantine { name: c.name }).await.map(|()| ok())
            }
            Route::Move(c) => store.run(c).await.map(|()| ok()),
            Route::Delete(c) => store.run(c).await.map(|()| ok()),
            Route::Hash(c) => {
                let digest = store.run(c).await?;
                Ok(HttpResponse::Ok().content_type("text/plain").body(digest))
            }
            Route::Sync => store.run(lifecycle::Sync).await.map(|()| ok()),
            Route::Quota => {
                let q = store.run(nested::GetQuota).await?;
                // Python's json.dumps spacing.
                let json = format!("{{\"limit\": {}, \"usage\": {}}}", q.limit, q.usage);
                Ok(HttpResponse::Ok().content_type("application/json").body(json))
            }
            Route::List(c) => {
                let items = store.run(c).await?;
                Ok(HttpResponse::Ok().content_type("application/json").body(listing_json(&items)))
            }
            Route::Info(c) => {
                let name = c.name.clone();
                let info = store.run(c).await?;
                if !info.exists {
                    return Err(Error::not_found(&name));
                }
                Ok(HttpResponse::Ok()
                    .insert_header(("X-BorgStore-Is-Directory", if info.directory { "true" } else { "false" }))
                    .insert_header(("X-BorgStore-Atime", float(info.atime)))
                    .insert_header(("X-BorgStore-Mtime", float(info.mtime)))
                    .body(HeadBody(info.size)))
            }
            Route::Load { load, partial } => {
                let value = store.run(load).await?;
                let code = if partial { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
                let mut answer = HttpResponse::build(code);
                answer.content_type("application/octet-stream");
                Ok(match value {
                    Value::Bytes(data) => answer.body(data),
                    // A large value leaves its file a piece at a time (see backends::value).
                    Value::File(range) => answer.body(SizedStream::new(range.left(), range.into_pieces())),
                })
            }
            Route::Gather => {
                let (body, _held) = early!(json_body(r.http, r.app, payload).await);
                let data = store.run(nested::Gather { sources: sources(&body)? }).await?;
                Ok(HttpResponse::Ok().content_type("application/octet-stream").body(data))
            }
            Route::Defrag(target) => {
                let (body, _held) = early!(json_body(r.http, r.app, payload).await);
                let name = store.run(nested::Defrag { sources: sources(&body)?, target }).await?;
                Ok(HttpResponse::Ok().content_type("text/plain").body(name))
            }
            Route::Store { name } => upload(r, payload, name).await,
        }
    }
}

/// Refuse the root where a route needs an item name, with `message` (Python's words).
fn need_name(name: &str, message: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(message));
    }
    Ok(())
}

/// How defrag names its result: `target=`, or `algorithm=` with `namespace=` and
/// `levels=` (as Python: a trailing slash is dropped, levels below 1 mean none).
fn defrag_target(r: &Request) -> Result<DefragTarget> {
    Ok(match (r.param("target"), r.param("algorithm")) {
        (Some(t), _) => DefragTarget::Name(t.into()),
        (None, Some(a)) => DefragTarget::Hashed {
            algorithm: a.parse()?,
            namespace: r.param("namespace").unwrap_or("").trim_end_matches('/').to_string(),
            levels: match r.param("levels") {
                Some(l) => {
                    l.parse::<i64>().map_err(|_| Error::invalid("levels must be a small number"))?.clamp(0, 8) as u32
                }
                None => 0,
            },
        },
        (None, None) => return Err(Error::invalid("Missing target or algorithm for defrag")),
    })
}

/// Store the request body under `name`.
///
/// What is held whole in memory needs room in the budget first; large uploads to a
/// backend that streams them hold only a few pieces. A store that cannot refuse a value
/// by item (no permissions, no quota) gets a small body read here and handed over
/// whole, which saves two trips between threads; otherwise the store asks for the body
/// only once it has decided to take it.
async fn upload(r: &Request<'_>, payload: &mut web::Payload, name: String) -> Result<HttpResponse> {
    let store = As { handle: r.entry.handle(), who: &r.who };
    let len = early!(body_length(r.http, r.app.max_body));
    let whole = len <= STREAM_ABOVE || !r.entry.streams_uploads;
    let _held = if whole { early!(reserve(r.app, len).await) } else { Reservation::none() };
    let expected =
        r.http.headers().get("x-content-hash-sha256").map(|v| v.as_bytes().to_vec()).filter(|v| !v.is_empty());
    let (tx, stream) = BodyStream::channel(len);
    let (pumped, stored) = if whole && !r.entry.admits_conditionally && !r.who.profile.restricts() {
        let (pumped, value) = futures::join!(pump(payload, tx, expected), stream.collect());
        match value {
            Ok(v) if pumped == Pumped::Done => (pumped, store.run(nested::Store { name, value: Body::Full(v) }).await),
            Ok(_) => (pumped, Err(Error::invalid("the request body was not accepted"))),
            Err(e) => (pumped, Err(e)),
        }
    } else {
        let command = store.run(nested::Store { name, value: Body::Stream(stream) });
        futures::join!(pump(payload, tx, expected), command)
    };
    if pumped == Pumped::HashMismatch {
        // Python's server sends this one without a Content-Type.
        return Ok(HttpResponse::UnprocessableEntity().body("Content hash verification failed, please retry"));
    }
    stored.map(|()| ok())
}

/// One entry of a listing, in the key order Python's server writes.
#[derive(serde::Serialize)]
struct Listed<'a> {
    name: &'a str,
    size: u64,
    directory: bool,
    atime: f64,
    mtime: f64,
}

/// A listing as JSON, formatted as Python's `json.dumps(items, indent=2)` does.
fn listing_json(items: &[ItemInfo]) -> String {
    let items: Vec<Listed> = items
        .iter()
        .map(|i| Listed { name: &i.name, size: i.size, directory: i.directory, atime: i.atime, mtime: i.mtime })
        .collect();
    serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".to_string())
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

/// Times as Python prints floats: always with a fractional part.
fn float(t: f64) -> String {
    if t.fract() == 0.0 && t.abs() < 1e16 {
        format!("{t:.1}")
    } else {
        t.to_string()
    }
}
