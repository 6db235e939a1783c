//! The OAP policy packs agentd knows (from OAP's capability registry):
//! each capability's context fields as argument rules, how its limits and
//! parameters become constraints, its minimum assurance, and which OAP
//! deny code a refusal of each argument is.
use serde_json::Value;

use super::capability::Capability;
use super::passport::Passport;
use super::schema::is_currency;
use crate::policy::schema::{ArgKind, ArgRule};
use crate::protocol::reason;

/// One policy pack.
pub struct Pack {
    /// The capability it governs (`finance.payment.refund`).
    pub capability: &'static str,
    /// The pack's policy id (`finance.payment.refund.v1`).
    pub policy_id: &'static str,
    /// The lowest assurance level it admits.
    pub min_assurance: &'static str,
    /// Argument → the OAP code a refusal of it is.
    pub codes: &'static [(&'static str, &'static str)],
    pub(crate) build: fn(&mut Capability<'_>, &Passport),
    /// The capability parameters `build` reads.
    pub params: &'static [&'static str],
}

/// The packs, by capability.
pub static PACKS: [Pack; 3] = [
    Pack {
        capability: "finance.payment.refund",
        policy_id: "finance.payment.refund.v1",
        min_assurance: "L2",
        codes: &[
            ("amount", "oap.limit_exceeded"),
            ("currency", "oap.currency_unsupported"),
            ("region", "oap.region_blocked"),
            ("reason_code", "oap.invalid_reason"),
        ],
        build: refund,
        params: &["max_amount", "currency"],
    },
    Pack {
        capability: "data.export",
        policy_id: "data.export.create.v1",
        min_assurance: "L1",
        codes: &[
            ("include_pii", "oap.pii_blocked"),
            ("collection", "oap.collection_forbidden"),
            ("estimated_rows", "oap.limit_exceeded"),
            ("region", "oap.region_blocked"),
        ],
        build: export,
        params: &[],
    },
    Pack {
        capability: "repo.release.publish",
        policy_id: "repo.release.publish.v1",
        min_assurance: "L2",
        codes: &[
            ("branch", "oap.branch_forbidden"),
            ("signer", "oap.unsigned_artifact"),
            ("artifact_sha", "oap.unsigned_artifact"),
            ("region", "oap.region_blocked"),
        ],
        build: release,
        params: &[],
    },
];

/// The pack of a capability, if agentd knows one.
pub fn pack(capability: &str) -> Option<&'static Pack> {
    PACKS.iter().find(|p| p.capability == capability)
}

/// The OAP reason code of an agentd decision: `oap.allowed`, the pack's
/// code for the argument refused, OAP's normative code where one fits, and
/// `agentd.<reason>` where none does.
pub fn oap_code(capability: &str, agentd_reason: &str, argument: Option<&str>) -> String {
    if agentd_reason == reason::OK {
        return "oap.allowed".into();
    }
    let on_value = matches!(
        agentd_reason,
        reason::VALUE_NOT_ALLOWED | reason::VALUE_OUT_OF_RANGE | reason::SIZE_LIMIT_EXCEEDED
    );
    if let (true, Some(arg), Some(pk)) = (on_value, argument, pack(capability)) {
        if let Some((_, code)) = pk.codes.iter().find(|(a, _)| *a == arg) {
            return (*code).into();
        }
    }
    let code = match agentd_reason {
        reason::VALUE_OUT_OF_RANGE
        | reason::SIZE_LIMIT_EXCEEDED
        | reason::USAGE_THRESHOLD
        | reason::RATE_LIMITED => "oap.limit_exceeded",
        reason::UNKNOWN_ACTION | reason::ROLE_NOT_IN_ALLOWLIST => "oap.unknown_capability",
        reason::UNKNOWN_ARGUMENT
        | reason::MISSING_ARGUMENT
        | reason::INVALID_ARGUMENT
        | reason::INVALID_PATH => "oap.invalid_context",
        reason::OPERATOR_SUSPENDED | reason::AGENT_SUSPENDED | reason::ALL_SUSPENDED => {
            "oap.passport_suspended"
        }
        other => return format!("agentd.{other}"),
    };
    code.into()
}

fn refund(c: &mut Capability<'_>, p: &Passport) {
    c.unknown_limits(&["currency_limits", "reason_codes", "idempotency_required"]);
    let (amount, currency) = refund_amounts(c);
    c.args.insert("amount".into(), amount);
    c.args.insert(
        "currency".into(),
        ArgRule {
            values: currency,
            ..ArgRule::of(ArgKind::String)
        },
    );
    let reasons = c.limit("reason_codes").cloned();
    c.string_arg(
        "reason_code",
        reasons.as_ref().map(|v| ("reason_codes", v)),
        false,
    );
    c.string_arg("order_id", None, false);
    c.string_arg("customer_id", None, false);
    let idem = c.limit("idempotency_required").and_then(Value::as_bool) == Some(true);
    c.string_arg("idempotency_key", None, !idem);
    if idem {
        c.out.unenforced(
            format!("{}/idempotency_required", c.at),
            "`idempotency_key` is required, but a reused key (oap.idempotency_conflict) is not detected",
        );
    }
    c.region(p, false);
}

/// `amount` and `currency`: the currencies of `currency_limits` (only the
/// capability's `params.currency` if it names one), the amount bounded by
/// the smallest `max_per_tx` among them and `params.max_amount`.
fn refund_amounts(c: &mut Capability<'_>) -> (ArgRule, Option<Vec<String>>) {
    let mut amount = ArgRule::of(ArgKind::Integer);
    amount.min = Some(0);
    let only = c
        .params
        .get("currency")
        .and_then(Value::as_str)
        .map(str::to_owned);
    // Params are free-form in the schema: a currency that is no currency
    // code matches no call (agentd's values are identifiers), so none is
    // allowed.
    if let Some(code) = only.as_ref().filter(|code| !is_currency(code)) {
        c.out.narrowed(
            format!("{}/currency_limits", c.at),
            format!("the capability's params name `{code}`, not a currency code (^[A-Z]{{3}}$): no currency is allowed"),
        );
    }
    let limits = c
        .limit("currency_limits")
        .and_then(Value::as_object)
        .cloned();
    let mut currency = match (&limits, &only) {
        (Some(cl), _) => Some(cl.keys().cloned().collect::<Vec<_>>()),
        (None, Some(code)) if is_currency(code) => Some(vec![code.clone()]),
        (None, Some(_)) => Some(Vec::new()),
        (None, None) => None,
    };
    if let (Some(list), Some(code)) = (&mut currency, &only) {
        if list.iter().any(|x| x != code) {
            c.out.narrowed(
                format!("{}/currency_limits", c.at),
                format!("only {code} is kept: the capability's params name that currency"),
            );
        }
        list.retain(|x| x == code);
    }
    if let Some(cl) = &limits {
        let kept = |k: &String| currency.as_ref().is_none_or(|l| l.contains(k));
        let maxes: Vec<Option<i64>> = cl
            .iter()
            .filter(|(k, _)| kept(k))
            .map(|(_, l)| l["max_per_tx"].as_i64())
            .collect();
        amount.max = maxes.iter().flatten().copied().min();
        if maxes.iter().any(|m| *m != amount.max) {
            c.out.narrowed(
                format!("{}/currency_limits", c.at),
                format!(
                    "agentd bounds `amount` alone, not per currency: every currency gets the smallest max_per_tx ({})",
                    amount.max.map_or("none".into(), |m| m.to_string())
                ),
            );
        }
        for (code, l) in cl.iter().filter(|(k, _)| kept(k)) {
            if l.get("daily_cap").is_some() {
                c.out.unenforced(
                    format!("{}/currency_limits/{code}/daily_cap", c.at),
                    "agentd counts calls, not the sum of their amounts: no daily cap",
                );
            }
        }
    }
    if let Some(m) = c.params.get("max_amount").and_then(Value::as_i64) {
        amount.max = Some(amount.max.map_or(m, |x| x.min(m)));
    }
    // A negative maximum refunds nothing; agentd's amount starts at 0, so
    // the call is closed by its currency instead.
    if amount.max.is_some_and(|m| m < 0) {
        c.out.narrowed(
            format!("{}/currency_limits", c.at),
            "a negative maximum amount allows no refund: no currency is allowed",
        );
        amount.max = Some(0);
        currency = Some(Vec::new());
    }
    (amount, currency)
}

fn export(c: &mut Capability<'_>, p: &Passport) {
    c.unknown_limits(&["max_rows", "allow_pii", "allowed_collections"]);
    let collections = c.limit("allowed_collections").cloned();
    c.string_arg(
        "collection",
        collections.as_ref().map(|v| ("allowed_collections", v)),
        false,
    );
    let mut rows = ArgRule::of(ArgKind::Integer);
    rows.min = Some(0);
    rows.max = c.limit("max_rows").and_then(Value::as_i64);
    rows.optional = rows.max.is_none();
    c.args.insert("estimated_rows".into(), rows);
    let mut pii = ArgRule::of(ArgKind::Boolean);
    pii.optional = true;
    // Absent allow_pii is no PII, as OAP's reference evaluator reads it.
    if c.limit("allow_pii").and_then(Value::as_bool) != Some(true) {
        pii.values = Some(vec!["false".into()]);
    }
    c.args.insert("include_pii".into(), pii);
    c.region(p, false);
}

fn release(c: &mut Capability<'_>, p: &Passport) {
    c.unknown_limits(&[
        "allowed_branches",
        "max_releases_per_day",
        "require_signed_artifacts",
    ]);
    c.string_arg("repo", None, false);
    let branches = c.limit("allowed_branches").cloned();
    c.string_arg(
        "branch",
        branches.as_ref().map(|v| ("allowed_branches", v)),
        false,
    );
    c.string_arg("tag", None, false);
    let signed = c.limit("require_signed_artifacts").and_then(Value::as_bool) == Some(true);
    c.string_arg("artifact_sha", None, !signed);
    c.string_arg("signer", None, !signed);
    if signed {
        c.out.unenforced(
            format!("{}/require_signed_artifacts", c.at),
            "`signer` and `artifact_sha` are required, but the artifact's signature is not verified",
        );
    }
    if let Some(m) = c.limit("max_releases_per_day").cloned() {
        c.usage("max_releases_per_day", &m, 86_400);
    }
    c.region(p, true);
}
