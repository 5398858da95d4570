//! Rules: which profile a principal gets on one store.
//!
//! A store's rules are tried in order; the first whose principal matches the caller
//! gives the caller its [`Profile`]. A rule names one principal: a local `uid`, a local
//! group `gid` (primary or supplementary), a REST user (`rest_user`, after its password
//! was verified), the common name of a verified TLS client certificate (`cert_cn`), or
//! `default` (anyone the doors let in). No rule matching means no access.
//!
//! When a store has no rules, the older keys (`allow_uids`, `allow_gids`, the REST
//! users, `public_on`, `permissions`, `quota`) stand for the rules they always meant:
//! each of those principals gets the store's permissions and quota.

use crate::policy::Profile;
use std::sync::Arc;

/// Whom a rule is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// A local user (Unix socket doors).
    Uid(u32),
    /// Members of a local group, primary or supplementary (Unix socket doors).
    Gid(u32),
    /// A REST user whose password was verified.
    RestUser(String),
    /// A client whose TLS certificate verified and has this subject common name.
    CertCn(String),
    /// Anyone the doors let in.
    Default,
}

impl Match {
    /// The label a rule gets when it has no name: `uid:1001`, `rest:alice`, ...
    pub fn label(&self) -> String {
        match self {
            Match::Uid(u) => format!("uid:{u}"),
            Match::Gid(g) => format!("gid:{g}"),
            Match::RestUser(u) => format!("rest:{u}"),
            Match::CertCn(c) => format!("cert:{c}"),
            Match::Default => "default".to_string(),
        }
    }
}

/// One rule: a principal and the profile it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Whom it is for.
    pub principal: Match,
    /// What it may do (its name is the rule's label).
    pub profile: Arc<Profile>,
}

/// What the doors established about a caller, to match rules against.
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity<'a> {
    /// The local process (uid, primary and supplementary groups), on a Unix socket door.
    pub peer: Option<&'a super::LocalPeer>,
    /// The REST user whose password verified.
    pub rest_user: Option<&'a str>,
    /// The common name of a verified client certificate.
    pub cert_cn: Option<&'a str>,
}

impl Rule {
    /// Does this rule's principal match the caller?
    pub fn matches(&self, who: &Identity<'_>) -> bool {
        match &self.principal {
            Match::Uid(u) => who.peer.is_some_and(|p| p.uid == *u),
            Match::Gid(g) => who.peer.is_some_and(|p| p.matches(&[], &[*g])),
            Match::RestUser(u) => who.rest_user == Some(u.as_str()),
            Match::CertCn(c) => who.cert_cn == Some(c.as_str()),
            Match::Default => true,
        }
    }
}

/// The profile of the first rule matching the caller.
pub fn first_match<'r>(rules: &'r [Rule], who: &Identity<'_>) -> Option<&'r Arc<Profile>> {
    rules.iter().find(|r| r.matches(who)).map(|r| &r.profile)
}
