//! The receipt card: what a person sees — operator, action, target, decision
//! time, audit sequence and row hash prefix, and a check glyph for the
//! allowed result — drawn with the 8×8 public-domain bitmap font of the
//! `font8x8` crate (compiled in, so every host renders the same pixels).
//!
//! The card is laid out for its watermark: text rows sit on the 8-pixel
//! chip grid (`mark`), every text row followed by a blank row, so a row of
//! text darkens whole chip rows alike (the horizontal chip statistic cancels
//! it); the background carries the synchronisation template (`template`) at
//! low amplitude, which also gives the flat panel a fine guilloche texture.
//! All colours stay within luma [30, 235] so the mark and a ±10 %
//! brightness change do not clip.
use super::claims::ReceiptClaims;
use super::template;

/// Side of the standard card, pixels.
pub const SIZE: usize = 256;
/// Largest card side accepted by [`render`].
pub const MAX_SIZE: usize = 1024;

/// Template wave amplitude (luma units per wave; four waves).
const TEMPLATE_AMP: f32 = 4.0;

const HEADER: [f32; 3] = [38.0, 66.0, 104.0];
const HEADER_TEXT: [f32; 3] = [226.0, 232.0, 238.0];
const PANEL: [f32; 3] = [224.0, 219.0, 204.0];
const INK: [f32; 3] = [34.0, 38.0, 46.0];
const MUTED: [f32; 3] = [96.0, 100.0, 108.0];
const GOOD: [f32; 3] = [36.0, 140.0, 76.0];

/// What the card shows besides the claims.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Face {
    /// Target of the call as the audit row has it (path, command,
    /// recipient, ...); empty if unknown.
    pub target: String,
    /// Show "[redacted]" instead of the target (policy `receipt_redact`).
    pub redacted: bool,
}

impl Face {
    /// The face of a call whose audit row has `target` (a tool call's
    /// arguments as JSON): the argument naming what the call acts on (see
    /// [`display_target`]). A redacted face drops the target here, so it
    /// never reaches the renderer.
    pub fn of_call(target: &str, redacted: bool) -> Self {
        Self {
            target: if redacted {
                String::new()
            } else {
                display_target(target)
            },
            redacted,
        }
    }
}

/// Arguments that name what a call acts on, most telling first.
const TARGET_ARGS: [&str; 6] = ["path", "file_path", "command", "to", "url", "mailbox"];

/// What the card's target line says for an audit row's target. A tool
/// call's target is its arguments as a JSON object: the card shows the
/// first of `path`, `file_path`, `command`, `to`, `url`, `mailbox` present,
/// else an MCP call's `server.tool`, else the first argument by name; a
/// list joined (a command's words by spaces, other items by ", ");
/// anything else is shown as it is.
pub fn display_target(target: &str) -> String {
    let Ok(serde_json::Value::Object(args)) = serde_json::from_str::<serde_json::Value>(target)
    else {
        return target.to_owned();
    };
    let text = |k: &str| args.get(k).and_then(serde_json::Value::as_str);
    if !TARGET_ARGS.iter().any(|k| args.contains_key(*k)) {
        if let Some(tool) = text("tool") {
            return match text("server") {
                Some(server) => format!("{server}.{tool}"),
                None => tool.to_owned(),
            };
        }
    }
    let chosen = TARGET_ARGS
        .iter()
        .find_map(|k| args.get_key_value(*k))
        .or_else(|| args.iter().next());
    let Some((name, value)) = chosen else {
        return String::new();
    };
    let item = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match value {
        serde_json::Value::Array(items) => {
            let sep = if name == "command" { " " } else { ", " };
            items.iter().map(item).collect::<Vec<_>>().join(sep)
        }
        v => item(v),
    }
}

/// Shortens `s` to at most `max` characters, keeping the start and the end
/// (the end of a path or command is the part that identifies it).
pub fn shorten(s: &str, max: usize) -> String {
    let chars: Vec<char> = s
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if chars.len() <= max {
        return chars.into_iter().collect();
    }
    let head = (max - 2) / 3;
    let tail = max - 2 - head;
    let mut out: String = chars[..head].iter().collect();
    out.push_str("..");
    out.extend(&chars[chars.len() - tail..]);
    out
}

/// A card being drawn at 256×256 in float RGB.
struct Canvas {
    px: Vec<[f32; 3]>,
}

impl Canvas {
    fn fill(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, c: [f32; 3]) {
        for y in y0..y1.min(SIZE) {
            for x in x0..x1.min(SIZE) {
                self.px[y * SIZE + x] = c;
            }
        }
    }

    /// Draws `text` with its top-left corner at (x, y), each font pixel
    /// `scale`×`scale`, clipped at `max_x`.
    fn text(&mut self, x: usize, y: usize, text: &str, scale: usize, c: [f32; 3], max_x: usize) {
        for (i, ch) in text.chars().enumerate() {
            let code = if ch.is_ascii() {
                ch as usize
            } else {
                b'?' as usize
            };
            let glyph = font8x8::legacy::BASIC_LEGACY[code];
            let gx = x + i * 8 * scale;
            if gx + 8 * scale > max_x {
                break;
            }
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) == 0 {
                        continue;
                    }
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let (px, py) = (gx + col * scale + dx, y + row * scale + dy);
                            if px < SIZE && py < SIZE {
                                self.px[py * SIZE + px] = c;
                            }
                        }
                    }
                }
            }
        }
    }

    /// The result glyph: a filled disc with a check mark.
    fn check(&mut self, cx: f32, cy: f32, r: f32) {
        // Distance from p to segment a–b.
        let seg = |p: (f32, f32), a: (f32, f32), b: (f32, f32)| {
            let (vx, vy) = (b.0 - a.0, b.1 - a.1);
            let t = (((p.0 - a.0) * vx + (p.1 - a.1) * vy) / (vx * vx + vy * vy)).clamp(0.0, 1.0);
            ((p.0 - a.0 - t * vx).powi(2) + (p.1 - a.1 - t * vy).powi(2)).sqrt()
        };
        let a = (cx - 0.45 * r, cy + 0.02 * r);
        let b = (cx - 0.12 * r, cy + 0.35 * r);
        let e = (cx + 0.5 * r, cy - 0.35 * r);
        for y in 0..SIZE {
            for x in 0..SIZE {
                let p = (x as f32 + 0.5, y as f32 + 0.5);
                let d = ((p.0 - cx).powi(2) + (p.1 - cy).powi(2)).sqrt();
                if d > r + 1.0 {
                    continue;
                }
                // Anti-aliased disc edge.
                let cover = (r + 0.5 - d).clamp(0.0, 1.0);
                let mut c = GOOD;
                if seg(p, a, b).min(seg(p, b, e)) < 0.13 * r {
                    c = HEADER_TEXT;
                }
                let old = self.px[y * SIZE + x];
                self.px[y * SIZE + x] =
                    std::array::from_fn(|i| old[i] * (1.0 - cover) + c[i] * cover);
            }
        }
    }
}

/// Lays out the card (256×256 float RGB, before the template).
fn layout(claims: &ReceiptClaims, face: &Face) -> Canvas {
    let mut c = Canvas {
        px: vec![PANEL; SIZE * SIZE],
    };
    // Header band: title and the result glyph.
    c.fill(0, 0, SIZE, 40, HEADER);
    c.text(12, 12, "RECEIPT", 2, HEADER_TEXT, 200);
    c.check(226.0, 20.0, 14.0);
    // The action, large.
    c.text(12, 48, &shorten(&claims.action, 14), 2, INK, 244);
    let target = if face.redacted {
        "[redacted]".to_string()
    } else if face.target.is_empty() {
        "-".to_string()
    } else {
        shorten(&face.target, 23)
    };
    let time = claims
        .timestamp
        .get(..19)
        .unwrap_or(&claims.timestamp)
        .replace('T', " ");
    let rows = [
        ("by", shorten(&claims.operator, 23)),
        ("on", target),
        ("at", format!("{time}Z")),
        ("seq", claims.seq.to_string()),
        ("row", shorten(&claims.row_hash, 16)),
        ("call", shorten(&claims.call_id, 23)),
    ];
    // Text rows on the chip grid: one 8-px text row, one blank row.
    for (i, (label, value)) in rows.iter().enumerate() {
        let y = 80 + 16 * i;
        c.text(12, y, label, 1, MUTED, 52);
        c.text(52, y, value, 1, INK, 244);
    }
    c.fill(0, 184, SIZE, 185, MUTED);
    c.text(12, 200, "agentd: allowed", 1, MUTED, 244);
    c.text(12, 216, "agentctl receipt verify", 1, MUTED, 244);
    c
}

/// Renders the card for `claims` as packed RGB8, `size`×`size` (`size` a
/// multiple of 256 up to [`MAX_SIZE`]; larger cards are the same layout
/// with each pixel drawn `size/256` times, the template at full resolution).
/// Also returns the card's 256×256 luma, which the mark is computed on.
pub fn render(claims: &ReceiptClaims, face: &Face, size: usize) -> (Vec<u8>, Vec<f32>) {
    let c = layout(claims, face);
    let m = size / SIZE;
    let k = std::f32::consts::TAU / template::PERIOD;
    let mut out = Vec::with_capacity(size * size * 3);
    // Separable template: sin(a + b) = sin a·cos b + cos a·sin b per wave.
    type SinCos = Vec<(f32, f32)>;
    let tables: Vec<(SinCos, SinCos)> = template::ANGLES
        .iter()
        .map(|a| {
            let (s, co) = a.to_radians().sin_cos();
            let at = |i: usize, f: f32| (k * f * ((i as f32 + 0.5) / m as f32)).sin_cos();
            (
                (0..size).map(|x| at(x, co)).collect(),
                (0..size).map(|y| at(y, s)).collect(),
            )
        })
        .collect();
    for y in 0..size {
        for x in 0..size {
            let t: f32 = tables
                .iter()
                .map(|(tx, ty)| tx[x].0 * ty[y].1 + tx[x].1 * ty[y].0)
                .sum();
            let p = c.px[(y / m) * SIZE + x / m];
            out.extend(
                p.iter()
                    .map(|v| (v + TEMPLATE_AMP * t).round().clamp(0.0, 255.0) as u8),
            );
        }
    }
    let luma = if m == 1 {
        super::watermark::luma(&out)
    } else {
        // The 256×256 view of a larger card: box average.
        let big = super::watermark::luma(&out);
        let mut l = vec![0.0f32; SIZE * SIZE];
        for (i, v) in big.iter().enumerate() {
            let (y, x) = (i / size, i % size);
            l[(y / m) * SIZE + x / m] += v / (m * m) as f32;
        }
        l
    };
    (out, luma)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_line_names_what_the_call_acts_on() {
        assert_eq!(
            display_target(r#"{"path":"/srv/charts/p-0042.json"}"#),
            "/srv/charts/p-0042.json"
        );
        // `to` before the other arguments; recipients joined.
        assert_eq!(
            display_target(r#"{"body":"hi","subject":"s","to":["a@x.example","b@x.example"]}"#),
            "a@x.example, b@x.example"
        );
        // A command's words joined by spaces.
        assert_eq!(
            display_target(r#"{"command":["/usr/bin/ls","-l","/workspace"]}"#),
            "/usr/bin/ls -l /workspace"
        );
        // An MCP call: its server and tool.
        assert_eq!(
            display_target(r#"{"input":{"q":"x"},"server":"crm","tool":"find_contact"}"#),
            "crm.find_contact"
        );
        // No known name: the first argument by name; numbers as written.
        assert_eq!(display_target(r#"{"limit":5,"zone":"a"}"#), "5");
        assert_eq!(display_target("{}"), "");
        // Not a JSON object: as it is.
        assert_eq!(display_target("previous_operator:x"), "previous_operator:x");
    }

    #[test]
    fn a_redacted_face_keeps_no_target() {
        let t = r#"{"path":"/srv/charts/p-0042.json"}"#;
        assert_eq!(
            Face::of_call(t, false),
            Face {
                target: "/srv/charts/p-0042.json".into(),
                redacted: false
            }
        );
        assert_eq!(
            Face::of_call(t, true),
            Face {
                target: String::new(),
                redacted: true
            }
        );
    }

    #[test]
    fn the_redacted_card_differs_only_on_the_target_line() {
        let claims = ReceiptClaims {
            seq: 7,
            row_hash: "ab".repeat(32),
            operator: "dr-chen".into(),
            call_id: "c1".into(),
            action: "read_chart".into(),
            timestamp: "2026-12-02T20:00:00.000000Z".into(),
        };
        let t = r#"{"path":"/srv/charts/p-0042.json"}"#;
        let (open, _) = render(&claims, &Face::of_call(t, false), SIZE);
        let (hidden, _) = render(&claims, &Face::of_call(t, true), SIZE);
        let rows: Vec<usize> = (0..SIZE)
            .filter(|y| {
                let row = y * SIZE * 3..(y + 1) * SIZE * 3;
                open[row.clone()] != hidden[row]
            })
            .collect();
        // The `on` row is drawn at y 96..104 (second text row).
        assert!(!rows.is_empty());
        assert!(rows.iter().all(|y| (96..104).contains(y)), "{rows:?}");
    }

    #[test]
    fn shorten_keeps_both_ends() {
        assert_eq!(shorten("short", 10), "short");
        let s = shorten("/srv/clinic/charts/patient-00017/notes.txt", 20);
        assert_eq!(s.len(), 20);
        assert!(s.starts_with("/srv/"), "{s}");
        assert!(s.ends_with("notes.txt"), "{s}");
        assert_eq!(shorten("a\u{7}b", 5), "a?b");
    }
}
