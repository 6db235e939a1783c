//! Splits a shell command line into words, refusing anything the shell
//! would do more with than run one program: operators (`; & | < > ( )`),
//! expansions (`$`, backquotes, globs, `~`, braces), comments, newlines.
//!
//! Why so strict: a runtime's shell tool runs the text with `sh -c`; the
//! policy checks a program and its arguments. If the two could read the
//! text differently (`ls /workspace && mailctl reset --all`), an allow for
//! `ls` would run `mailctl`. A refused command is denied with
//! `shell_syntax_not_allowed`; the kernel would refuse the second program
//! anyway, but the gateway must not say "allow" for it.
//!
//! Quoting is understood: `'…'` is literal, `"…"` is literal except `\"`,
//! `\\`, `\$`, `` \` `` (an unescaped `$` or backquote inside is refused),
//! and a backslash outside quotes escapes the next character.

/// Why a command line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellWordsError {
    /// A construct that does more than run one program.
    #[error("shell syntax `{construct}` at byte {at} is not allowed (one program and its arguments only)")]
    Syntax {
        /// The character or construct refused.
        construct: String,
        /// Byte offset in the command.
        at: usize,
    },
    /// A quote is not closed.
    #[error("unterminated {quote} quote")]
    Unterminated {
        /// `single` or `double`.
        quote: &'static str,
    },
    /// Nothing to run.
    #[error("empty command")]
    Empty,
}

/// Characters refused outside quotes.
const REFUSED: &[char] = &[
    ';', '&', '|', '<', '>', '(', ')', '$', '`', '*', '?', '[', ']', '{', '}', '~', '#', '!', '\n',
    '\r',
];

/// Splits `cmd` into words (see the module documentation for what is refused).
pub fn split(cmd: &str) -> Result<Vec<String>, ShellWordsError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    // A word exists (even empty, from `''`) once any part of it was seen.
    let mut in_word = false;
    let mut chars = cmd.char_indices().peekable();
    let syntax = |c: char, at: usize| ShellWordsError::Syntax {
        construct: c.escape_debug().to_string(),
        at,
    };
    while let Some((at, c)) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some((_, '\'')) => break,
                        Some((_, ch)) => cur.push(ch),
                        None => return Err(ShellWordsError::Unterminated { quote: "single" }),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((i, '\\')) => match chars.next() {
                            Some((_, e @ ('"' | '\\' | '$' | '`'))) => cur.push(e),
                            Some((j, '\n')) => return Err(syntax('\n', j)),
                            Some((_, other)) => {
                                cur.push('\\');
                                cur.push(other);
                            }
                            None => return Err(syntax('\\', i)),
                        },
                        Some((i, ch @ ('$' | '`'))) => return Err(syntax(ch, i)),
                        Some((_, ch)) => cur.push(ch),
                        None => return Err(ShellWordsError::Unterminated { quote: "double" }),
                    }
                }
            }
            '\\' => match chars.next() {
                Some((j, '\n')) => return Err(syntax('\n', j)),
                Some((_, e)) => {
                    in_word = true;
                    cur.push(e);
                }
                None => return Err(syntax('\\', at)),
            },
            c if REFUSED.contains(&c) || c.is_control() => return Err(syntax(c, at)),
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    if words.is_empty() {
        return Err(ShellWordsError::Empty);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Vec<String> {
        split(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn plain_and_quoted_words() {
        assert_eq!(ok("mailctl reset --all"), ["mailctl", "reset", "--all"]);
        assert_eq!(ok("  ls\t-la  /workspace "), ["ls", "-la", "/workspace"]);
        assert_eq!(
            ok("grep 'a b' \"c d\" e\\ f"),
            ["grep", "a b", "c d", "e f"]
        );
        assert_eq!(
            ok("echo '$HOME;|' \"\\$x \\\"q\\\"\""),
            ["echo", "$HOME;|", "$x \"q\""]
        );
        assert_eq!(ok("printf ''"), ["printf", ""]);
        assert_eq!(ok("ls --opt=v"), ["ls", "--opt=v"]);
    }

    #[test]
    fn refuses_what_the_shell_would_interpret() {
        for bad in [
            "ls /workspace && mailctl reset --all",
            "ls; rm -rf /",
            "ls | sh",
            "cat </etc/shadow",
            "echo x > /etc/passwd",
            "echo $(id)",
            "echo `id`",
            "echo \"$HOME\"",
            "echo \"`id`\"",
            "ls *",
            "ls ~",
            "ls {a,b}",
            "ls #c",
            "ls\nrm x",
            "ls \\\nrm",
            "(ls)",
            "ls &",
            "ls\u{7}",
        ] {
            assert!(
                matches!(split(bad), Err(ShellWordsError::Syntax { .. })),
                "{bad:?} must be refused: {:?}",
                split(bad)
            );
        }
        assert_eq!(split("   "), Err(ShellWordsError::Empty));
        assert_eq!(
            split("echo 'x"),
            Err(ShellWordsError::Unterminated { quote: "single" })
        );
        assert_eq!(
            split("echo \"x"),
            Err(ShellWordsError::Unterminated { quote: "double" })
        );
        assert!(split("echo \\").is_err());
    }
}
