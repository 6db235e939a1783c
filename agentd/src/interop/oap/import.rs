//! A passport's capabilities and limits as an agentd policy: one role
//! holding one action per capability, each taking the capability's
//! context fields (the OAP capability registry's) as arguments.
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::capability::{string, Args, Capability};
use super::packs::{pack, Pack};
use super::passport::{assurance_rank, Passport};
use crate::interop::Converted;
use crate::policy::compile::is_action_name;
use crate::policy::schema::{ActionDef, MessageRules, PolicyFile, RoleDef};

/// Why a passport cannot become a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// Only an active passport grants anything.
    #[error("/status: the passport is `{0}`; only an active passport grants capabilities")]
    NotActive(String),
    /// The role name is not a valid agentd role name.
    #[error("role name `{0}`: use lowercase letters, digits, `_` and `-` (at most 64)")]
    RoleName(String),
}

/// The rate limit the converted role gets (agentd limits every role's
/// calls per operator; a passport has no such limit).
pub const ROLE_RATE_PER_MINUTE: u32 = 600;

/// Converts a checked passport, its capabilities becoming actions of
/// `role`.
pub fn import(p: &Passport, role: &str) -> Result<Converted, ImportError> {
    if p.status != "active" {
        return Err(ImportError::NotActive(p.status.clone()));
    }
    let role_ok = !role.is_empty()
        && role.len() <= 64
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !role_ok {
        return Err(ImportError::RoleName(role.to_owned()));
    }
    let mut out = skeleton(p);
    out.narrowed(
        "/",
        format!("role `{role}` may make {ROLE_RATE_PER_MINUTE} calls a minute per operator (agentd's per-role rate limit)"),
    );
    let mut role_def = RoleDef {
        description: "The capabilities of the passport.".into(),
        rate_per_minute: ROLE_RATE_PER_MINUTE,
        burst: None,
        destructive: Some(false),
        owner: Some(false),
        allow: BTreeMap::new(),
        limits: BTreeMap::new(),
        session_start: None,
    };
    let no_limits = Map::new();
    for (i, cap) in p.capabilities.iter().enumerate() {
        let at = format!("/capabilities/{i}");
        let limits = p.limits.get(&cap.id).unwrap_or(&no_limits);
        // The schema bounds no capability id's length; agentd's action
        // names are at most 64 characters.
        if !is_action_name(&cap.id) {
            out.narrowed(
                &at,
                format!("capability `{}` is longer than an agentd action name may be (64 characters): left out", cap.id),
            );
            continue;
        }
        let Some(pk) = pack(&cap.id) else {
            unknown_capability(&mut out, &at, &cap.id, limits);
            role_def.allow.insert(cap.id.clone(), region_only(p));
            out.policy
                .actions
                .insert(cap.id.clone(), ActionDef::default());
            continue;
        };
        if assurance_rank(&p.assurance_level) < assurance_rank(pk.min_assurance) {
            out.narrowed(
                &at,
                format!(
                    "capability `{}` needs assurance {} ({}); the passport has {}: left out",
                    cap.id, pk.min_assurance, pk.policy_id, p.assurance_level
                ),
            );
            continue;
        }
        let mut c = Capability {
            out: &mut out,
            at: format!("/limits/{}", cap.id),
            limits,
            params: &cap.params,
            args: Args::new(),
            action: ActionDef::default(),
            usage: None,
        };
        (pk.build)(&mut c, p);
        c.unknown_params(&at, pk);
        let (args, action, usage) = (c.args, c.action, c.usage);
        role_def.allow.insert(cap.id.clone(), args);
        if let Some(u) = usage {
            role_def.limits.insert(cap.id.clone(), u);
        }
        out.policy.actions.insert(cap.id.clone(), action);
    }
    for cap in p.limits.keys() {
        if !p.capabilities.iter().any(|c| &c.id == cap) {
            out.narrowed(
                format!("/limits/{cap}"),
                "limits of a capability the passport does not grant: nothing to convert",
            );
        }
    }
    out.policy.roles.insert(role.to_owned(), role_def);
    Ok(out)
}

/// The policy's frame: id and description from the passport, no role yet.
fn skeleton(p: &Passport) -> Converted {
    Converted {
        policy: PolicyFile {
            id: format!("oap-{}", p.passport_id.to_ascii_lowercase()),
            description: format!(
                "Open Agent Passport {} of {} (assurance {})",
                p.passport_id, p.owner_id, p.assurance_level
            ),
            messages: MessageRules::default(),
            roles: BTreeMap::new(),
            actions: BTreeMap::new(),
            profiles: BTreeMap::new(),
            runtime: BTreeMap::new(),
            mcp: Default::default(),
            sessions: Default::default(),
            anomaly: None,
            protected: Default::default(),
        },
        notes: Vec::new(),
    }
}

fn unknown_capability(out: &mut Converted, at: &str, id: &str, limits: &Map<String, Value>) {
    out.narrowed(
        at,
        format!("capability `{id}` has no context fields in agentd's table: its action takes only `region`; other arguments are denied (unknown_argument)"),
    );
    for key in limits.keys() {
        out.unenforced(
            format!("/limits/{id}/{key}"),
            "a limit of a capability agentd has no table for",
        );
    }
}

fn region_only(p: &Passport) -> Args {
    Args::from([("region".to_owned(), string(Some(p.regions.clone()), true))])
}

impl Capability<'_> {
    /// Capability `params` the pack does not read are unenforced.
    fn unknown_params(&mut self, at: &str, pk: &Pack) {
        for k in self.params.keys() {
            if !pk.params.contains(&k.as_str()) {
                self.out.unenforced(
                    format!("{at}/params/{k}"),
                    "a capability parameter agentd has no equivalent for",
                );
            }
        }
    }
}
