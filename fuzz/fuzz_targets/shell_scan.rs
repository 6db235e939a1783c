//! An independent scanner for shell syntax, shared by the targets that check
//! what the hook mapping lets through (included with `#[path]`).

/// What the splitter must refuse outside quotes (its module documentation).
pub const REFUSED: &str = ";&|<>()$`*?[]{}~#!\n\r";

/// True when `s` has a refused character outside quotes, as sh reads it:
/// an independent scanner (no word building), so the splitter cannot agree
/// with itself by construction.
pub fn has_unquoted_refused(s: &str) -> bool {
    let mut it = s.chars();
    while let Some(c) = it.next() {
        match c {
            '\'' => {
                for d in it.by_ref() {
                    if d == '\'' {
                        break;
                    }
                }
            }
            '"' => {
                while let Some(d) = it.next() {
                    match d {
                        '"' => break,
                        '\\' => {
                            it.next();
                        }
                        // `$` and backquote expand inside double quotes too.
                        '$' | '`' => return true,
                        _ => {}
                    }
                }
            }
            '\\' => {
                if it.next() == Some('\n') {
                    return true;
                }
            }
            c if REFUSED.contains(c) || (c.is_control() && c != '\t') => return true,
            _ => {}
        }
    }
    false
}
