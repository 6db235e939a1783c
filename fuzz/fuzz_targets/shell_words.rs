//! The shell-words splitter the hook mapping runs on a runtime's shell
//! command, on arbitrary text. Properties: never panics; the words it
//! accepts survive quoting (re-quoting each word and splitting again gives
//! the same words); text with no quote, escape or refused character splits
//! exactly at spaces and tabs; an accepted command never contains a refused
//! character outside quotes (checked by a small independent scanner here).
#![no_main]
use agentd::runtime::shell_words::split;
use libfuzzer_sys::fuzz_target;

#[path = "shell_scan.rs"]
mod shell_scan;
use shell_scan::{has_unquoted_refused, REFUSED};

/// Single-quotes a word the POSIX way (`'` becomes `'\''`).
fn quote(w: &str) -> String {
    format!("'{}'", w.replace('\'', r"'\''"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(cmd) = std::str::from_utf8(data) else {
        return;
    };
    let result = split(cmd);
    match &result {
        Ok(words) => {
            assert!(!words.is_empty());
            assert!(
                !has_unquoted_refused(cmd),
                "accepted {cmd:?} though it has shell syntax"
            );
            let again: Vec<String> = words.iter().map(|w| quote(w)).collect();
            let back = split(&again.join(" "));
            assert_eq!(back.as_ref(), Ok(words), "re-quoted {words:?}");
        }
        Err(_) => {}
    }
    let plain = !cmd
        .chars()
        .any(|c| "'\"\\".contains(c) || REFUSED.contains(c) || (c.is_control() && c != '\t'));
    if plain {
        let expect: Vec<String> = cmd
            .split([' ', '\t'])
            .filter(|w| !w.is_empty())
            .map(String::from)
            .collect();
        if expect.is_empty() {
            assert!(result.is_err());
        } else {
            assert_eq!(result, Ok(expect), "{cmd:?}");
        }
    }
});
