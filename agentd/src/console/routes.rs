//! The console's HTTP routes (on its loopback listener).
//!
//! Pages: `GET /` (the app, signed in), `GET /login?token=T` (a one-time
//! link → session cookie), `POST /logout`, `GET /assets/*`.
//! JSON and the stream (session required): `GET /api/events` (SSE),
//! `GET /api/calls/{id}`, `GET /api/calls/{id}/receipt.png[?size=N]`,
//! `GET /api/chain`, `GET /api/agents`, `GET /api/counts`,
//! `POST /api/agents/{name}/mode` (CSRF token and a confirmation token),
//! `GET /api/approvals`, `POST /api/approvals/{id}/approve|deny` (CSRF
//! token; `approvals`).
//!
//! Every request passes the Host/Origin checks first; every response
//! carries a strict Content-Security-Policy (scripts and styles from the
//! console itself only) and `Cache-Control: no-store`.
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::auth::Session;
use super::csrf::{self, RequestSite, SiteError};
use super::filter::RowFilter;
use super::views::{self, AgentRow, CallView, ChainView, Counts, GrantView, MessageView};
use super::{assets, now_secs, sse, Console};
use crate::api::ApiError;
use crate::audit::store;
use crate::enforce::Mode;
use crate::protocol::reason;

/// Name of the session cookie.
pub const COOKIE: &str = "agentd_console";

type St = State<Arc<Console>>;

/// The console's router.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/login", get(login))
        .route("/logout", post(logout))
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", assets::APP_JS) }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", assets::APP_CSS) }),
        )
        .route("/api/events", get(events))
        .route("/api/calls/{id}", get(call))
        .route("/api/calls/{id}/receipt.png", get(receipt_png))
        .route("/api/chain", get(chain))
        .route("/api/agents", get(agents))
        .route("/api/agents/{name}/mode", post(set_mode))
        .route("/api/counts", get(counts))
        .route("/api/approvals", get(super::approvals::list))
        .route("/api/approvals/{id}/{verb}", post(super::approvals::answer))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                reason::NOT_FOUND,
                "no such console page",
            )
        })
        .layer(middleware::from_fn_with_state(console.clone(), guard))
        .with_state(console)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Host/Origin checks before anything else, security headers after.
async fn guard(State(c): St, req: Request, next: Next) -> Response {
    let h = req.headers();
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    let site = RequestSite {
        host: get("host"),
        origin: get("origin"),
        fetch_site: get("sec-fetch-site"),
    };
    let changes = req.method() != Method::GET && req.method() != Method::HEAD;
    let checked = match c.origins() {
        Some(o) => csrf::check_site(o, &site, changes),
        None => Err(SiteError::Host("(console not bound)".into())),
    };
    let mut resp = match checked {
        Ok(()) => next.run(req).await,
        Err(e) => {
            tracing::warn!(error = %e, "console: request refused");
            ApiError::new(
                if matches!(e, SiteError::Host(_)) {
                    StatusCode::MISDIRECTED_REQUEST
                } else {
                    StatusCode::FORBIDDEN
                },
                reason::CONSOLE_ORIGIN_REFUSED,
                e.to_string(),
            )
            .into_response()
        }
    };
    let hs = resp.headers_mut();
    for (k, v) in [
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        hs.insert(k, HeaderValue::from_static(v));
    }
    resp
}

fn cookie_of(h: &HeaderMap) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

fn no_session() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        reason::CONSOLE_SESSION_REQUIRED,
        "sign in first: run `agentctl console` and open the link it prints",
    )
}

impl Console {
    pub(super) fn session_of(&self, h: &HeaderMap) -> Result<(String, Session), ApiError> {
        let cookie = cookie_of(h).ok_or_else(no_session)?;
        let s = self
            .tokens()
            .session(&cookie, now_secs())
            .ok_or_else(no_session)?;
        Ok((cookie, s))
    }

    /// A session whose state-changing request carries its CSRF token.
    pub(super) fn session_csrf(&self, h: &HeaderMap) -> Result<(String, Session), ApiError> {
        let (cookie, s) = self.session_of(h)?;
        let given = h.get(csrf::CSRF_HEADER).and_then(|v| v.to_str().ok());
        csrf::check_csrf(&s.csrf, given).map_err(|e| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                reason::CONSOLE_CSRF_INVALID,
                e.to_string(),
            )
        })?;
        Ok((cookie, s))
    }
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn index(State(c): St, h: HeaderMap) -> Response {
    match c.session_of(&h) {
        Ok((_, s)) => html(StatusCode::OK, assets::index(&s.csrf)),
        Err(_) => html(
            StatusCode::UNAUTHORIZED,
            assets::message_page(
                "Sign in",
                reason::CONSOLE_SESSION_REQUIRED,
                "Run `agentctl console` on this host (as an admin) and open the one-time link it prints.",
            ),
        ),
    }
}

/// Decodes `application/x-www-form-urlencoded` pairs (a query string);
/// malformed escapes stay as they are.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        // `+` is a space; `%2B` (decoded after) stays a plus.
        let spaced = s.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8_lossy()
            .into_owned()
    }
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The last value of `key` among decoded query pairs.
pub fn query_value(q: &[(String, String)], key: &str) -> Option<String> {
    q.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

async fn login(State(c): St, RawQuery(q): RawQuery) -> Response {
    let q = parse_query(q.as_deref().unwrap_or(""));
    let token = query_value(&q, "token").unwrap_or_default();
    let now = now_secs();
    let redeemed = c
        .tokens()
        .redeem_link(&token, now, c.config.session_ttl_secs);
    match redeemed {
        Ok((cookie, s)) => {
            c.record(
                &s.admin,
                "console_login",
                &format!("session:{}", s.id),
                "allow",
                reason::OK,
            )
            .await;
            let set = format!(
                "{COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
                c.config.session_ttl_secs
            );
            let mut r = StatusCode::SEE_OTHER.into_response();
            let hs = r.headers_mut();
            hs.insert(header::LOCATION, HeaderValue::from_static("/"));
            if let Ok(v) = HeaderValue::from_str(&set) {
                hs.insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => {
            let code = e.login_reason();
            c.record("console", "console_login", "", "deny", code).await;
            html(
                StatusCode::UNAUTHORIZED,
                assets::message_page(
                    "Login link refused",
                    code,
                    "A login link works once and for a short time. Run `agentctl console` again for a fresh one.",
                ),
            )
        }
    }
}

async fn logout(State(c): St, h: HeaderMap) -> Result<Response, ApiError> {
    let (cookie, s) = c.session_csrf(&h)?;
    c.tokens().end_session(&cookie);
    c.record(
        &s.admin,
        "console_logout",
        &format!("session:{}", s.id),
        "allow",
        reason::OK,
    )
    .await;
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("agentd_console=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    Ok(r)
}

async fn events(State(c): St, h: HeaderMap, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let (cookie, _) = c.session_of(&h)?;
    let q = parse_query(q.as_deref().unwrap_or(""));
    let get = |k: &str| query_value(&q, k);
    let resume = h
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let spec = sse::StreamSpec {
        filter: RowFilter::from_query(&q),
        after: resume.or(get("after").and_then(|a| a.parse().ok())),
        backlog: get("backlog")
            .and_then(|b| b.parse().ok())
            .unwrap_or(200usize)
            .min(2000),
    };
    let reader = sse::Reader::open(c.parts.audit.db_path().to_owned()).map_err(unavailable)?;
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let me = c.clone();
    let alive = move || me.tokens().session(&cookie, now_secs()).is_some();
    tokio::spawn(sse::feed(
        reader,
        spec,
        c.parts.audit.subscribe(),
        c.stop.clone(),
        alive,
        tx,
    ));
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::new(sse::ChannelBody(rx)),
    )
        .into_response())
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        crate::audit::REASON_AUDIT_UNAVAILABLE,
        e.to_string(),
    )
}

fn bad_call_id(id: &str) -> Option<ApiError> {
    (id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'))
    .then(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            reason::INVALID_CALL_ID,
            "a call id is letters, digits, - and _",
        )
    })
}

async fn call(
    State(c): St,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<CallView>, ApiError> {
    c.session_of(&h)?;
    if let Some(e) = bad_call_id(&id) {
        return Err(e);
    }
    let path = c.parts.audit.db_path().to_owned();
    let cid = id.clone();
    let (gw, kernel, message) = tokio::task::spawn_blocking(move || {
        let conn = store::open_ro(&path)?;
        let (gw, kernel) = views::call_rows(&conn, &path, &cid)?;
        let am = gw
            .last()
            .map(|r| r.event.active_message_id.clone())
            .unwrap_or_default();
        let message = views::message_row(&conn, &path, &am)?;
        Ok::<_, store::StoreError>((gw, kernel, message))
    })
    .await
    .map_err(unavailable)?
    .map_err(unavailable)?;
    if gw.is_empty() && kernel.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            reason::NOT_FOUND,
            format!("no audit row names call {id}"),
        ));
    }
    let decision = gw
        .iter()
        .rev()
        .find(|r| r.event.kind == crate::audit::RecordKind::ToolCall)
        .cloned();
    let policy = c.parts.gateway.current_policy();
    let explanation = decision
        .as_ref()
        .map(|r| explanation_of(&c, policy.as_deref(), r));
    let grant = decision
        .as_ref()
        .filter(|r| r.event.decision == "allow")
        .map(|r| grant_of(&c, policy.as_deref(), r, &id));
    let receipt = receipt_of(&c, &id, decision.as_ref()).await;
    Ok(Json(CallView {
        call_id: id,
        decision: decision.as_ref().map(Into::into),
        decisions: gw.iter().map(Into::into).collect(),
        message: message.as_ref().map(|m| MessageView {
            row: m.into(),
            signature: views::signature_status(m),
        }),
        explanation,
        grant,
        kernel: kernel.iter().map(Into::into).collect(),
        receipt,
    }))
}

/// Why the policy decided as it did, with the operator's roles today.
fn explanation_of(
    c: &Console,
    policy: Option<&crate::policy::CompiledPolicy>,
    row: &crate::audit::Record,
) -> crate::explain::Explanation {
    let roles = c
        .parts
        .gateway
        .list_operators()
        .into_iter()
        .find(|o| o.id == row.event.operator)
        .map(|o| o.roles);
    let ctx = crate::explain::Context {
        policy_source: policy.map(|p| p.source.as_str()),
        policy_id: policy.map(|p| p.id.as_str()),
        operator_roles: roles.as_deref(),
        agent_profiles: None,
        call_row: None,
    };
    crate::explain::explain(row, &ctx)
}

/// The grant an allowed call gets from the policy, and whether an agent
/// holds it live.
fn grant_of(
    c: &Console,
    policy: Option<&crate::policy::CompiledPolicy>,
    row: &crate::audit::Record,
    call_id: &str,
) -> GrantView {
    let live = c.parts.enforce.get().and_then(|e| {
        e.list_agents()
            .into_iter()
            .find(|a| a.calls.iter().any(|id| id == call_id))
            .map(|a| a.name)
    });
    let template = policy
        .and_then(|p| toml::from_str::<crate::policy::schema::PolicyFile>(&p.source).ok())
        .and_then(|f| {
            f.actions
                .get(&row.event.action)
                .and_then(|a| a.grant.clone())
        });
    GrantView {
        template,
        live: live.is_some(),
        agent: live,
    }
}

async fn receipt_of(
    c: &Console,
    id: &str,
    decision: Option<&crate::audit::Record>,
) -> views::ReceiptView {
    let Some(row) = decision.filter(|r| r.event.decision == "allow") else {
        return views::receipt_state("none", None);
    };
    let Some(q) = &c.parts.receipts else {
        return views::receipt_state("unavailable", Some("no receipt queue".into()));
    };
    let file = q.receipt_path(id);
    let Ok(png) = std::fs::read(&file) else {
        let why = q.failure_of(id).ok().flatten();
        return match why {
            Some(w) => views::receipt_state("unavailable", Some(w)),
            None => views::receipt_state("pending", None),
        };
    };
    let Some(key) = c.parts.gateway.key_of(&row.event.operator) else {
        return views::receipt_state(
            "unavailable",
            Some(
                "the operator's key is gone (revoked or rotated): verify with the old key offline"
                    .into(),
            ),
        );
    };
    let row = row.clone();
    let image = format!("/api/calls/{id}/receipt.png");
    tokio::task::spawn_blocking(move || views::check_receipt(&png, &key, &row, image))
        .await
        .unwrap_or_else(|e| views::receipt_state("failed", Some(e.to_string())))
}

async fn receipt_png(
    State(c): St,
    h: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    c.session_of(&h)?;
    if let Some(e) = bad_call_id(&id) {
        return Err(e);
    }
    let q = parse_query(q.as_deref().unwrap_or(""));
    let size = match query_value(&q, "size") {
        None => crate::receipt::card::SIZE,
        Some(s) => s.parse::<usize>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_card_size",
                "size is a number of pixels: 256, 512, 768 or 1024",
            )
        })?,
    };
    let png = if size == crate::receipt::card::SIZE {
        issued_png(&c, &id).await?
    } else {
        larger_png(&c, id, size).await?
    };
    Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response())
}

/// The card the receipt worker wrote.
async fn issued_png(c: &Console, id: &str) -> Result<Vec<u8>, ApiError> {
    let file = c
        .parts
        .receipts
        .as_ref()
        .map(|q| q.receipt_path(id))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, reason::NOT_FOUND, "no receipts"))?;
    tokio::fs::read(&file).await.map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            reason::NOT_FOUND,
            "no receipt for this call (yet)",
        )
    })
}

/// The sealed receipt drawn again at `size` (`receipt::issued::render`:
/// same claims and face, under the operator's current key if it is still
/// the sealing one), off the async workers.
async fn larger_png(c: &Console, id: String, size: usize) -> Result<Vec<u8>, ApiError> {
    if c.parts.receipts.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            reason::NOT_FOUND,
            "no receipts",
        ));
    }
    let db = c.parts.audit.db_path().to_owned();
    let gateway = c.parts.gateway.clone();
    tokio::task::spawn_blocking(move || {
        let conn = store::open_ro(&db).map_err(unavailable)?;
        crate::receipt::issued::render(&conn, &id, |op| gateway.key_of(op), size, false)
            .map(|(_, png)| png)
            .map_err(|e| {
                let status = match e.reason_code() {
                    "bad_card_size" => StatusCode::BAD_REQUEST,
                    "operator_key_changed" | "operator_key_unknown" => StatusCode::CONFLICT,
                    "receipt_store_failed" => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::NOT_FOUND,
                };
                ApiError::new(status, e.reason_code(), e.to_string())
            })
    })
    .await
    .map_err(unavailable)?
}

async fn chain(State(c): St, h: HeaderMap) -> Result<Json<ChainView>, ApiError> {
    c.session_of(&h)?;
    let path = c.parts.audit.db_path().to_owned();
    let key = c.parts.audit.verifying_key();
    tokio::task::spawn_blocking(move || views::chain(&path, &key))
        .await
        .map(Json)
        .map_err(unavailable)
}

async fn agents(State(c): St, h: HeaderMap) -> Result<Json<Vec<AgentRow>>, ApiError> {
    c.session_of(&h)?;
    Ok(Json(agent_rows(&c).await))
}

async fn agent_rows(c: &Console) -> Vec<AgentRow> {
    let mut rows: std::collections::BTreeMap<String, AgentRow> = Default::default();
    if let Some(e) = c.parts.enforce.get() {
        for a in tokio::task::spawn_blocking(move || e.list_agents())
            .await
            .unwrap_or_default()
        {
            rows.insert(
                a.name.clone(),
                AgentRow {
                    name: a.name,
                    mode: a.mode,
                    pids: a.pids,
                    grants: a.calls,
                    registered: true,
                    configured: false,
                },
            );
        }
    }
    if let Some(m) = c.parts.agents.clone() {
        let defs = tokio::task::spawn_blocking(move || m.list())
            .await
            .ok()
            .and_then(Result::ok);
        for v in defs.unwrap_or_default() {
            rows.entry(v.def.name.clone())
                .and_modify(|r| r.configured = true)
                .or_insert(AgentRow {
                    name: v.def.name.clone(),
                    mode: v.def.mode,
                    pids: vec![],
                    grants: vec![],
                    registered: false,
                    configured: true,
                });
        }
    }
    rows.into_values().collect()
}

/// `POST /api/agents/{name}/mode` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeChange {
    mode: Mode,
    /// A confirmation token from `agentctl console --confirm`.
    #[serde(default)]
    confirm: String,
}

async fn set_mode(
    State(c): St,
    h: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Vec<AgentRow>>, ApiError> {
    let (_, s) = c.session_csrf(&h)?;
    if body.len() > 4096 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            reason::BODY_TOO_LARGE,
            "body too large",
        ));
    }
    let req: ModeChange = crate::api::json::parse(&body)?;
    let mode_s = match req.mode {
        Mode::Enforce => "enforce",
        Mode::AuditOnly => "audit-only",
    };
    let target = format!("{name} mode={mode_s} session:{}", s.id);
    let confirmed = c.tokens().redeem_confirm(&req.confirm, now_secs());
    if let Err(e) = confirmed {
        c.record(
            &s.admin,
            "agent_mode",
            &target,
            "deny",
            reason::CONSOLE_CONFIRMATION_INVALID,
        )
        .await;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            reason::CONSOLE_CONFIRMATION_INVALID,
            format!("switching a mode needs a fresh confirmation token ({e}): run `agentctl console --confirm`"),
        ));
    }
    let result = apply_mode(&c, &name, req.mode).await;
    match result {
        Ok(()) => {
            c.record(&s.admin, "agent_mode", &target, "allow", reason::OK)
                .await;
            Ok(Json(agent_rows(&c).await))
        }
        Err((code, msg)) => {
            c.record(&s.admin, "agent_mode", &target, "deny", code)
                .await;
            let status = if code == "unknown_agent" {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::CONFLICT
            };
            Err(ApiError::new(status, code, msg))
        }
    }
}

/// Switches an agent's mode where it is defined: through the agent
/// manager for a configured agent (so the change persists), else in the
/// enforcer. Fails with a reason code and a message.
async fn apply_mode(c: &Console, name: &str, mode: Mode) -> Result<(), (&'static str, String)> {
    let configured = match &c.parts.agents {
        Some(m) => {
            let (m, n) = (m.clone(), name.to_owned());
            tokio::task::spawn_blocking(move || m.show(&n).is_ok())
                .await
                .unwrap_or(false)
        }
        None => false,
    };
    if configured {
        let (m, n) = (c.parts.agents.clone().expect("configured"), name.to_owned());
        return tokio::task::spawn_blocking(move || {
            m.set_mode(&n, mode)
                .map(|_| ())
                .map_err(|e| (e.reason_code(), e.to_string()))
        })
        .await
        .unwrap_or_else(|e| Err(("internal", e.to_string())));
    }
    match c.parts.enforce.get() {
        Some(e) => {
            let n = name.to_owned();
            tokio::task::spawn_blocking(move || {
                e.set_mode(&n, mode)
                    .map_err(|e| (e.reason_code(), e.to_string()))
            })
            .await
            .unwrap_or_else(|e| Err(("internal", e.to_string())))
        }
        None => Err((
            "enforcement_unavailable",
            c.parts.enforce.unavailable_reason(),
        )),
    }
}

async fn counts(
    State(c): St,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Json<Counts>, ApiError> {
    c.session_of(&h)?;
    let q = parse_query(q.as_deref().unwrap_or(""));
    let minutes = query_value(&q, "minutes")
        .and_then(|m| m.parse().ok())
        .unwrap_or(30usize)
        .clamp(1, 24 * 60);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    let minute = 60_000_000;
    let since = (now / minute - (minutes as i64 - 1)) * minute;
    let path = c.parts.audit.db_path().to_owned();
    tokio::task::spawn_blocking(move || {
        let conn = store::open_ro(&path)?;
        views::counts(&conn, &path, since, minutes)
    })
    .await
    .map_err(unavailable)?
    .map(Json)
    .map_err(unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        let q = parse_query("token=ab%2Fc&agent=a+b&x&bad=%zz%4&decision=deny&decision=allow");
        assert_eq!(query_value(&q, "token").as_deref(), Some("ab/c"));
        assert_eq!(query_value(&q, "agent").as_deref(), Some("a b"));
        assert_eq!(query_value(&q, "x").as_deref(), Some(""));
        assert_eq!(query_value(&q, "bad").as_deref(), Some("%zz%4"));
        assert_eq!(query_value(&q, "decision").as_deref(), Some("allow"));
        assert_eq!(query_value(&q, "none"), None);
        assert_eq!(parse_query(""), vec![]);
        assert_eq!(parse_query("a=%E2%9C%93"), vec![("a".into(), "✓".into())]);
        // A sign is no hex digit (an integer parser would take `%+1` as 0x01).
        assert_eq!(
            parse_query("a=%+1&b=%-1"),
            vec![("a".into(), "% 1".into()), ("b".into(), "%-1".into())]
        );
        assert_eq!(parse_query("a=%2B"), vec![("a".into(), "+".into())]);
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("x=1; agentd_console=abc; y=2"),
        );
        assert_eq!(cookie_of(&h).as_deref(), Some("abc"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("agentd_consolex=abc"),
        );
        assert_eq!(cookie_of(&h), None);
    }
}
