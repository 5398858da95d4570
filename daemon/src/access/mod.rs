//! Who may use which store, through which door: one decision for IPC, the REST Unix
//! socket and REST over TCP (DESIGN.md section 4).
//!
//! Every request is first turned into a [`Caller`]: the [`Door`] it came through, the
//! kernel's word on the local process behind a Unix socket ([`LocalPeer`], from
//! `SO_PEERCRED`/`SO_PEERGROUPS`), and the `Authorization` header of a REST request.
//! [`Grants::decide`] then either names the [`Principal`] or says why not
//! ([`Refusal`]). The IPC server and the REST front end call nothing else, so no door
//! can be more lenient than another.
//!
//! The rules, per store:
//! - a store is reached only through the doors in its `serve_on` (default: all);
//! - on a Unix socket (IPC or REST) the caller is its uid: the daemon's own uid, the
//!   store's `allow_uids`, or a group in `allow_gids` (primary or supplementary) is
//!   granted; anyone else is refused, unless the store is `public_on` that door (then
//!   the socket file's mode decides who can connect at all);
//! - on REST over TCP the caller is the Basic-auth user: a store is served there only
//!   with its own credentials, or when it is `public_on` TCP. The daemon refuses to
//!   start otherwise (see [`Grants::check_listener`]);
//! - a store with REST credentials asks for them on every REST door (the protocol's own
//!   rule, as in Python's server), on top of the uid check of the REST socket.
//!
//! Once a caller is let in, the store's rules ([`rules`]) pick its profile: what it may
//! do there ([`crate::policy::Profile`]). The first rule matching the caller wins; no
//! rule, no access. A store without rules has the rules its older keys stand for.
//!
//! - [`peer`]: reading a Unix socket peer's credentials.
//! - [`credentials`]: Basic-auth credentials, compared in constant time.
//! - [`rules`]: principals, rules and the first match.
//! - [`users`]: the REST users of a store (config, htpasswd), verified with a cache.

pub mod credentials;
pub mod peer;
pub mod rules;
pub mod users;

pub use credentials::{Credentials, CHALLENGE};
pub use peer::LocalPeer;
pub use rules::{Identity, Match, Rule};

use crate::policy::{Profile, Who};
use borgstore_ipc::{Error, Result};
use std::collections::BTreeSet;
use std::sync::Arc;

/// A way into the daemon; the names are the config keys of the listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Door {
    /// The IPC socket (`socket`).
    Socket,
    /// The REST protocol on a Unix socket (`rest_socket`), e.g. behind nginx.
    RestSocket,
    /// The REST protocol on TCP (`rest`).
    Rest,
}

impl Door {
    /// Every door, in the order of the listeners' config keys above.
    pub const ALL: [Door; 3] = [Door::Socket, Door::RestSocket, Door::Rest];

    /// The config key of this door's listener.
    pub fn key(self) -> &'static str {
        match self {
            Door::Socket => "socket",
            Door::RestSocket => "rest_socket",
            Door::Rest => "rest",
        }
    }

    /// Does this door identify callers by the uid of the process behind a Unix socket?
    pub fn by_uid(self) -> bool {
        !matches!(self, Door::Rest)
    }

    /// Does this door speak the REST protocol (and so ask for a store's credentials)?
    pub fn is_rest(self) -> bool {
        !matches!(self, Door::Socket)
    }

    /// A comma-separated list of door names, as in `serve_on`/`public_on` flags.
    pub fn parse_list(text: &str, what: &str) -> Result<BTreeSet<Door>> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<Door>())
            .collect::<Result<_>>()
            .map_err(|e| Error::invalid(format!("{what}: {}", e.message)))
    }
}

impl std::str::FromStr for Door {
    type Err = Error;
    fn from_str(s: &str) -> Result<Door> {
        Door::ALL
            .into_iter()
            .find(|d| d.key() == s)
            .ok_or_else(|| Error::invalid(format!("unknown listener {s:?}: use socket, rest_socket or rest")))
    }
}

impl std::fmt::Display for Door {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

/// What a door knows about a caller before anything is read beyond the request head.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The listener the request came through.
    pub door: Door,
    /// The process behind a Unix socket (None on TCP).
    pub peer: Option<&'a LocalPeer>,
    /// The `Authorization` header of a REST request (None without one, and always on IPC).
    pub authorization: Option<&'a [u8]>,
    /// The subject common name of a verified TLS client certificate (REST over TLS with
    /// a client CA configured); None otherwise.
    pub client_cert: Option<&'a str>,
}

/// Who a request was decided to come from, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The local process, on a Unix socket.
    pub peer: Option<LocalPeer>,
    /// The Basic-auth user, when the store has credentials and the caller gave them.
    pub rest_user: Option<String>,
    /// The common name of the caller's verified TLS client certificate.
    pub cert_cn: Option<String>,
    /// The profile of the rule that matched.
    pub profile: Arc<Profile>,
}

impl Principal {
    /// The principal with the door it came through, as the store actor takes it.
    pub fn who(&self, door: Door) -> Arc<Who> {
        Arc::new(Who { principal: self.to_string(), door: Some(door), profile: self.profile.clone() })
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.peer, &self.rest_user, &self.cert_cn) {
            (Some(p), Some(u), _) => write!(f, "uid {} as REST user {u}", p.uid),
            (Some(p), None, _) => write!(f, "uid {}", p.uid),
            (None, Some(u), _) => write!(f, "REST user {u}"),
            (None, None, Some(c)) => write!(f, "certificate {c}"),
            (None, None, None) => f.write_str("an anonymous REST client"),
        }
    }
}

/// Why a caller may not use a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The store asks for REST credentials and the caller gave none or wrong ones
    /// (REST: 401 with a challenge).
    Unauthenticated,
    /// The caller is known and not granted this store (IPC: PermissionDenied, REST: 403).
    NotGranted(String),
    /// The store is not served through this door (answered as if it did not exist).
    NotServedHere,
}

/// Who may use one store, and where.
#[derive(Debug, Clone)]
pub struct Grants {
    /// The store's name (for messages).
    pub store: String,
    /// The daemon's own uid: always granted on Unix sockets.
    pub owner_uid: u32,
    /// Further uids granted on Unix sockets.
    pub allow_uids: Vec<u32>,
    /// Groups granted on Unix sockets, matched against the peer's primary and
    /// supplementary groups.
    pub allow_gids: Vec<u32>,
    /// REST Basic-auth credentials of the store.
    pub users: Option<Arc<users::UserDb>>,
    /// Doors the store is reached through.
    pub serve_on: BTreeSet<Door>,
    /// Doors where the store needs no grant (TCP: no credentials; Unix: any uid that can
    /// connect to the socket).
    pub public_on: BTreeSet<Door>,
    /// The rules, in order; the first matching one gives the caller its profile.
    pub rules: Vec<Rule>,
}

impl Grants {
    /// The one access decision.
    pub fn decide(&self, caller: &Caller<'_>) -> std::result::Result<Principal, Refusal> {
        let door = caller.door;
        if !self.serve_on.contains(&door) {
            return Err(Refusal::NotServedHere);
        }
        let public = self.public_on.contains(&door);
        // On a Unix socket the uid decides first, so a caller without a grant learns
        // nothing about the store's password from the answer.
        let peer = match (door.by_uid(), caller.peer) {
            (false, _) => None,
            (true, None) => return Err(Refusal::NotGranted("the caller's credentials are unknown".into())),
            (true, Some(peer)) => {
                if !(public || self.admits_uid(peer)) {
                    return Err(Refusal::NotGranted(format!(
                        "uid {} is not granted access to store {}",
                        peer.uid, self.store
                    )));
                }
                Some(peer)
            }
        };
        let cert_cn = caller.client_cert.filter(|_| door.is_rest());
        let by_cert = cert_cn.is_some_and(|cn| {
            let id = Identity { cert_cn: Some(cn), ..Default::default() };
            self.rules.iter().any(|r| matches!(r.principal, Match::CertCn(_)) && r.matches(&id))
        });
        // The REST protocol's own rule: a store with credentials asks for them on every
        // REST door (a client certificate a rule names stands for them).
        // Only what needs no slow hash is verified here; a door calls
        // [`Grants::verify_slowly`] on a blocking thread first when it would take one.
        let verified = match (&self.users, door.is_rest()) {
            (Some(db), true) => db.verify_now(caller.authorization).flatten(),
            _ => None,
        };
        let rest_user = match (&self.users, door.is_rest()) {
            (Some(_), true) if verified.is_some() => verified.as_deref(),
            (Some(_), true) if by_cert => None,
            (Some(_), true) => return Err(Refusal::Unauthenticated),
            _ => None,
        };
        if peer.is_none() && rest_user.is_none() && !by_cert && !public {
            return Err(Refusal::NotGranted(format!("store {} is not served on TCP without credentials", self.store)));
        }
        let id = Identity { peer, rest_user, cert_cn };
        let principal = |profile: &Arc<Profile>| Principal {
            peer: peer.cloned(),
            rest_user: rest_user.map(str::to_string),
            cert_cn: cert_cn.map(str::to_string),
            profile: profile.clone(),
        };
        match rules::first_match(&self.rules, &id) {
            Some(profile) => Ok(principal(profile)),
            None => {
                let p = principal(&Arc::new(Profile::full("")));
                Err(Refusal::NotGranted(format!("no rule of store {} grants access to {p}", self.store)))
            }
        }
    }

    /// Is this uid let in through the Unix socket doors: the daemon's own, granted by
    /// `allow_uids`/`allow_gids`, or named by a uid or gid rule?
    fn admits_uid(&self, peer: &LocalPeer) -> bool {
        if peer.uid == self.owner_uid || peer.matches(&self.allow_uids, &self.allow_gids) {
            return true;
        }
        let id = Identity { peer: Some(peer), ..Default::default() };
        self.rules.iter().any(|r| matches!(r.principal, Match::Uid(_) | Match::Gid(_)) && r.matches(&id))
    }

    /// Would deciding on this `Authorization` header take a slow password hash (a
    /// bcrypt or SHA-crypt user not verified lately)? Then a door runs
    /// [`Grants::verify_slowly`] on a blocking thread before it decides.
    pub fn needs_slow_verification(&self, door: Door, authorization: Option<&[u8]>) -> bool {
        match (&self.users, door.is_rest()) {
            (Some(db), true) => db.verify_now(authorization).is_none(),
            _ => false,
        }
    }

    /// Verify the header's password the slow way; a right one is remembered, so the
    /// decision that follows finds it without hashing again.
    pub fn verify_slowly(&self, authorization: Option<&[u8]>) {
        if let Some(db) = &self.users {
            db.verify(authorization);
        }
    }

    /// Check, before a listener opens, that serving the store through `door` cannot let
    /// in anybody it was not meant for: TCP needs credentials unless the store is
    /// declared public there. The error names the store and the fixes.
    pub fn check_listener(&self, door: Door) -> Result<()> {
        let by_cert = self.rules.iter().any(|r| matches!(r.principal, Match::CertCn(_)));
        if door != Door::Rest || !self.serve_on.contains(&door) || self.users.is_some() || by_cert {
            return Ok(());
        }
        if self.public_on.contains(&door) {
            return Ok(());
        }
        let s = &self.store;
        Err(Error::invalid(format!(
            "store {s} would be served on the REST TCP listener to anyone who can connect (TCP carries no uid; \
             its allow_uids/allow_gids cannot apply there). Give it credentials (rest_username and rest_password \
             in [stores.{s}], or --rest-auth {s}=USER:PASS), keep it off TCP (serve_on = [\"socket\", \
             \"rest_socket\"], or --serve-on {s}=socket,rest_socket), or declare it public there \
             (public_on = [\"rest\"], or --public-on {s}=rest)"
        )))
    }

    /// How this door identifies callers of this store, for the startup log.
    pub fn describe(&self, door: Door) -> String {
        let creds = self.users.as_ref().map(|db| {
            let names: Vec<&str> = db.users().take(5).collect();
            let more =
                if db.len() > names.len() { format!(" and {} more", db.len() - names.len()) } else { String::new() };
            format!("Basic auth as {}{more}", names.join(", "))
        });
        let who = if self.public_on.contains(&door) {
            if door.by_uid() {
                "any uid that can connect".to_string()
            } else {
                "anyone".to_string()
            }
        } else if door.by_uid() {
            let mut parts = vec![format!("uid {} (the daemon's own)", self.owner_uid)];
            if !self.allow_uids.is_empty() {
                parts.push(format!("uids {}", join(&self.allow_uids)));
            }
            if !self.allow_gids.is_empty() {
                parts.push(format!("gids {}", join(&self.allow_gids)));
            }
            parts.join(", ")
        } else {
            String::new()
        };
        match (who.is_empty(), door.is_rest(), creds) {
            (true, _, Some(c)) => c,
            (false, true, Some(c)) => format!("{who}; {c}"),
            (_, _, _) => who,
        }
    }
}

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> LocalPeer {
        LocalPeer { uid, gid, groups: groups.to_vec(), pid: None }
    }

    fn grants() -> Grants {
        Grants {
            store: "s".into(),
            owner_uid: 500,
            allow_uids: vec![1001],
            allow_gids: vec![100],
            users: None,
            serve_on: Door::ALL.into_iter().collect(),
            public_on: BTreeSet::new(),
            rules: vec![Rule { principal: Match::Default, profile: Arc::new(Profile::full("default")) }],
        }
    }

    fn basic(u: &str, p: &str) -> Vec<u8> {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))).into_bytes()
    }

    fn on(
        door: Door,
        p: Option<&LocalPeer>,
        auth: Option<&[u8]>,
        g: &Grants,
    ) -> std::result::Result<Principal, Refusal> {
        g.decide(&Caller { door, peer: p, authorization: auth, client_cert: None })
    }

    #[test]
    fn unix_doors_decide_by_uid_and_groups_alike() {
        let g = grants();
        for door in [Door::Socket, Door::RestSocket] {
            assert!(on(door, Some(&peer(500, 1, &[])), None, &g).is_ok(), "owner");
            assert!(on(door, Some(&peer(1001, 1, &[])), None, &g).is_ok(), "granted uid");
            assert!(on(door, Some(&peer(7, 100, &[])), None, &g).is_ok(), "granted primary gid");
            assert!(on(door, Some(&peer(7, 1, &[5, 100])), None, &g).is_ok(), "granted supplementary gid");
            let refused = on(door, Some(&peer(1002, 1, &[2])), None, &g).unwrap_err();
            assert!(matches!(&refused, Refusal::NotGranted(m) if m.contains("uid 1002")), "{refused:?}");
            assert!(matches!(on(door, None, None, &g), Err(Refusal::NotGranted(_))));
        }
    }

    #[test]
    fn credentials_are_asked_on_rest_doors_on_top_of_the_uid() {
        let mut g = grants();
        g.users = Some(Arc::new(users::UserDb::from_legacy("alice", "pw")));
        let good = basic("alice", "pw");
        let bad = basic("alice", "nope");
        let owner = peer(500, 1, &[]);
        let stranger = peer(1002, 1, &[]);
        // IPC has no Basic auth: the uid alone decides.
        assert!(on(Door::Socket, Some(&owner), None, &g).is_ok());
        // REST socket: the credentials and the uid grant.
        assert_eq!(on(Door::RestSocket, Some(&owner), None, &g), Err(Refusal::Unauthenticated));
        assert_eq!(on(Door::RestSocket, Some(&owner), Some(&bad), &g), Err(Refusal::Unauthenticated));
        let p = on(Door::RestSocket, Some(&owner), Some(&good), &g).unwrap();
        assert_eq!((p.peer.map(|p| p.uid), p.rest_user.as_deref()), (Some(500), Some("alice")));
        assert!(matches!(on(Door::RestSocket, Some(&stranger), Some(&good), &g), Err(Refusal::NotGranted(_))));
        // A stranger gets the same answer whatever password it tries.
        assert!(matches!(on(Door::RestSocket, Some(&stranger), Some(&bad), &g), Err(Refusal::NotGranted(_))));
        assert!(matches!(on(Door::RestSocket, Some(&stranger), None, &g), Err(Refusal::NotGranted(_))));
        // TCP: the credentials alone.
        assert_eq!(on(Door::Rest, None, None, &g), Err(Refusal::Unauthenticated));
        assert_eq!(on(Door::Rest, None, Some(&good), &g).unwrap().to_string(), "REST user alice");
    }

    #[test]
    fn tcp_without_credentials_only_when_public_and_doors_can_be_closed() {
        let mut g = grants();
        assert!(matches!(on(Door::Rest, None, None, &g), Err(Refusal::NotGranted(_))));
        let e = g.check_listener(Door::Rest).unwrap_err();
        for needle in ["store s", "rest_username", "--rest-auth s=", "serve_on", "public_on", "--public-on s=rest"] {
            assert!(e.message.contains(needle), "{needle}: {e}");
        }
        assert!(g.check_listener(Door::RestSocket).is_ok() && g.check_listener(Door::Socket).is_ok());
        g.public_on.insert(Door::Rest);
        assert!(g.check_listener(Door::Rest).is_ok());
        assert_eq!(on(Door::Rest, None, None, &g).unwrap().to_string(), "an anonymous REST client");
        // Public on TCP does not open the Unix doors.
        assert!(on(Door::RestSocket, Some(&peer(1002, 1, &[])), None, &g).is_err());
        g.public_on.insert(Door::RestSocket);
        assert!(on(Door::RestSocket, Some(&peer(1002, 1, &[])), None, &g).is_ok());
        g.serve_on.remove(&Door::Socket);
        assert_eq!(on(Door::Socket, Some(&peer(500, 1, &[])), None, &g), Err(Refusal::NotServedHere));
        g.serve_on.remove(&Door::Rest);
        g.public_on.remove(&Door::Rest);
        assert!(g.check_listener(Door::Rest).is_ok(), "a store kept off TCP needs nothing there");
    }

    fn profile(name: &str, letters: &str) -> Arc<Profile> {
        let perms = crate::backends::posixfs::Permissions::new([(String::new(), letters.to_string())].into()).unwrap();
        Arc::new(Profile { name: name.into(), permissions: perms, quota: None, quarantine_days: None, owner: false })
    }

    #[test]
    fn the_first_matching_rule_gives_the_profile_and_no_rule_no_access() {
        let mut g = grants();
        g.allow_uids.clear();
        g.allow_gids.clear();
        g.users = Some(Arc::new(users::UserDb::from_legacy("alice", "pw")));
        g.rules = vec![
            Rule { principal: Match::Uid(1001), profile: profile("first", "lr") },
            Rule { principal: Match::Gid(100), profile: profile("group", "lrw") },
            Rule { principal: Match::RestUser("alice".into()), profile: profile("alice", "lrwWD") },
            Rule { principal: Match::CertCn("host".into()), profile: profile("host", "l") },
        ];
        let name = |r: std::result::Result<Principal, Refusal>| r.map(|p| p.profile.name.clone());
        // uid 1001 is in group 100 too: the first rule wins.
        assert_eq!(name(on(Door::Socket, Some(&peer(1001, 100, &[])), None, &g)), Ok("first".into()));
        assert_eq!(name(on(Door::Socket, Some(&peer(7, 1, &[100])), None, &g)), Ok("group".into()));
        // A uid no rule names is not let in; nor is one granted only by a REST user.
        assert!(matches!(on(Door::Socket, Some(&peer(7, 1, &[])), None, &g), Err(Refusal::NotGranted(_))));
        let good = basic("alice", "pw");
        assert_eq!(name(on(Door::Rest, None, Some(&good), &g)), Ok("alice".into()));
        assert_eq!(on(Door::Rest, None, Some(&basic("alice", "x")), &g).map(|_| ()), Err(Refusal::Unauthenticated));
        // A verified certificate a rule names stands for the password.
        let cert = Caller { door: Door::Rest, peer: None, authorization: None, client_cert: Some("host") };
        assert_eq!(name(g.decide(&cert)), Ok("host".into()));
        let other = Caller { client_cert: Some("other"), ..cert };
        assert_eq!(g.decide(&other).map(|_| ()), Err(Refusal::Unauthenticated));
        // A store whose only TCP principals are certificates may be on TCP.
        g.users = None;
        assert!(g.check_listener(Door::Rest).is_ok());
        assert!(matches!(g.decide(&other), Err(Refusal::NotGranted(_))));
    }

    #[test]
    fn door_lists_parse_with_clear_errors() {
        assert_eq!(Door::parse_list("socket, rest", "x").unwrap(), [Door::Socket, Door::Rest].into_iter().collect());
        assert!(Door::parse_list("tcp", "--public-on").unwrap_err().message.contains("--public-on: unknown listener"));
    }
}
