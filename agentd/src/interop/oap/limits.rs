//! The `limits` member of a passport: the schema's typed properties for the
//! capabilities it names (`finance.payment.refund`, `data.export`,
//! `messaging.send`, `payments.payout`, `repo.release.publish`); other
//! capabilities' limits are open (`additionalProperties: true`).
use serde_json::Value;

use super::schema::{
    array, boolean, child, integer, is_currency, object, pattern, string, PassportError,
};

/// Checks `limits` against the schema.
pub(crate) fn validate(v: &Value, at: &str) -> Result<(), PassportError> {
    for (cap, l) in object(v, at)? {
        let at = child(at, cap);
        match cap.as_str() {
            "finance.payment.refund" => refund(l, &at)?,
            "data.export" => export(l, &at)?,
            "messaging.send" => messaging(l, &at)?,
            "payments.payout" => payout(l, &at)?,
            "repo.release.publish" => release(l, &at)?,
            _ => {}
        }
    }
    Ok(())
}

/// The rule of one member: value and its JSON pointer.
type MemberRule = fn(&Value, &str) -> Result<(), PassportError>;

/// Checks each present member with its rule (absent members are fine:
/// the schema requires none).
fn members(v: &Value, at: &str, rules: &[(&str, MemberRule)]) -> Result<(), PassportError> {
    let o = object(v, at)?;
    for (name, rule) in rules {
        if let Some(m) = o.get(*name) {
            rule(m, &child(at, name))?;
        }
    }
    Ok(())
}

fn int0(v: &Value, at: &str) -> Result<(), PassportError> {
    integer(v, at, 0).map(drop)
}
fn int1(v: &Value, at: &str) -> Result<(), PassportError> {
    integer(v, at, 1).map(drop)
}
fn boolean_(v: &Value, at: &str) -> Result<(), PassportError> {
    boolean(v, at).map(drop)
}
fn strings(v: &Value, at: &str) -> Result<(), PassportError> {
    for (i, s) in array(v, at)?.iter().enumerate() {
        string(s, &format!("{at}/{i}"))?;
    }
    Ok(())
}
fn currency(v: &Value, at: &str) -> Result<(), PassportError> {
    pattern(v, at, is_currency, "^[A-Z]{3}$")
}
fn currencies(v: &Value, at: &str) -> Result<(), PassportError> {
    for (i, s) in array(v, at)?.iter().enumerate() {
        currency(s, &format!("{at}/{i}"))?;
    }
    Ok(())
}

/// `currency_limits`: `patternProperties` `^[A-Z]{3}$`, each an object of
/// integer amounts >= 0 (`amounts` names them).
fn currency_limits(v: &Value, at: &str, amounts: &[&str]) -> Result<(), PassportError> {
    for (code, l) in object(v, at)? {
        let at = child(at, code);
        // Keys not matching the pattern are unconstrained by the schema;
        // agentd refuses them: it would read them as a currency.
        if !is_currency(code) {
            return Err(PassportError::Schema {
                at,
                message: "is not a currency code (^[A-Z]{3}$)".into(),
            });
        }
        let o = object(l, &at)?;
        for name in amounts {
            if let Some(m) = o.get(*name) {
                int0(m, &child(&at, name))?;
            }
        }
    }
    Ok(())
}

fn refund(v: &Value, at: &str) -> Result<(), PassportError> {
    members(
        v,
        at,
        &[
            ("currency_limits", |v, at| {
                currency_limits(v, at, &["max_per_tx", "daily_cap"])
            }),
            ("reason_codes", strings),
            ("idempotency_required", boolean_),
        ],
    )
}

fn export(v: &Value, at: &str) -> Result<(), PassportError> {
    members(
        v,
        at,
        &[
            ("max_rows", int1),
            ("allow_pii", boolean_),
            ("allowed_collections", strings),
        ],
    )
}

fn messaging(v: &Value, at: &str) -> Result<(), PassportError> {
    members(
        v,
        at,
        &[
            ("msgs_per_min", int1),
            ("msgs_per_day", int1),
            ("allowed_recipients", recipients),
            ("approval_required", boolean_),
        ],
    )
}

fn payout(v: &Value, at: &str) -> Result<(), PassportError> {
    members(
        v,
        at,
        &[
            ("supported_currencies", currencies),
            ("currency_limits", |v, at| {
                currency_limits(v, at, &["max_per_tx", "max_daily_amount"])
            }),
            ("allowed_destination_types", strings),
            ("allowed_recipients", recipients),
            ("approval_required", boolean_),
            ("max_payouts_per_day", int1),
            ("compliance_checks_required", boolean_),
        ],
    )
}

fn release(v: &Value, at: &str) -> Result<(), PassportError> {
    members(
        v,
        at,
        &[
            ("allowed_branches", strings),
            ("max_releases_per_day", int1),
            ("require_signed_artifacts", boolean_),
        ],
    )
}

/// `allowed_recipients`: `oneOf` an array of strings or an array of
/// `{id, limits}` objects. Exactly one branch must match, so an empty
/// array (which matches both) is refused, as a JSON Schema validator does.
fn recipients(v: &Value, at: &str) -> Result<(), PassportError> {
    let items = array(v, at)?;
    let as_strings = strings(v, at).is_ok();
    let as_objects = items
        .iter()
        .enumerate()
        .all(|(i, r)| recipient_object(r, &format!("{at}/{i}")).is_ok());
    match (as_strings, as_objects) {
        (true, false) | (false, true) => Ok(()),
        (true, true) => Err(PassportError::Schema {
            at: at.into(),
            message: "matches both forms of oneOf (an empty list); list at least one recipient"
                .into(),
        }),
        (false, false) => Err(PassportError::Schema {
            at: at.into(),
            message: "must be all strings or all objects with an `id` (oneOf)".into(),
        }),
    }
}

fn recipient_object(v: &Value, at: &str) -> Result<(), PassportError> {
    let o = object(v, at)?;
    let id = o.get("id").ok_or_else(|| PassportError::Schema {
        at: at.into(),
        message: "required member `id` is missing".into(),
    })?;
    string(id, &child(at, "id"))?;
    if let Some(l) = o.get("limits") {
        members(
            l,
            &child(at, "limits"),
            &[
                ("currency", currency),
                ("max_amount", int0),
                ("daily_cap", int0),
            ],
        )?;
    }
    Ok(())
}
