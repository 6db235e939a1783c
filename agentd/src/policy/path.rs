//! Path normalisation and scope matching for path-typed tool-call arguments.
//!
//! Normalisation is lexical and strict: it collapses `//` and drops `.`
//! components, and refuses anything whose meaning depends on the file system
//! (`..`) or that is a classic confusion trick (NUL, control characters,
//! components ending in a dot). The kernel layer re-checks real objects.

/// Longest accepted path, in bytes (PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;

/// Why a path was refused before any scope check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Relative or empty path.
    #[error("path `{path}` is not absolute")]
    NotAbsolute { path: String },
    /// NUL or another control character.
    #[error("path contains a NUL or control character")]
    ControlCharacter,
    /// A `..` component or a component ending in `.`.
    #[error("path `{path}` has a `..` or dot-terminated component")]
    DotComponent { path: String },
    /// Longer than PATH_MAX.
    #[error("path is {len} bytes; the limit is {MAX_PATH_LEN}")]
    TooLong { len: usize },
}

/// Normalises an absolute path (see module doc); returns the canonical string.
pub fn normalize(path: &str) -> Result<String, PathError> {
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong { len: path.len() });
    }
    if path.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute {
            path: path.to_owned(),
        });
    }
    let mut out = String::with_capacity(path.len());
    for comp in path.split('/') {
        if comp.is_empty() || comp == "." {
            continue;
        }
        if comp.ends_with('.') {
            return Err(PathError::DotComponent {
                path: path.to_owned(),
            });
        }
        out.push('/');
        out.push_str(comp);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// True if normalised `path` equals normalised `scope` or lies beneath it.
pub fn within(path: &str, scope: &str) -> bool {
    if scope == "/" {
        return true;
    }
    match path.strip_prefix(scope) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapses_slashes_and_single_dots() {
        assert_eq!(normalize("//workspace/./a//b/").unwrap(), "/workspace/a/b");
        assert_eq!(normalize("/").unwrap(), "/");
    }

    #[test]
    fn refuses_traversal_and_tricks() {
        assert!(matches!(
            normalize("/workspace/../etc/passwd"),
            Err(PathError::DotComponent { .. })
        ));
        assert!(matches!(
            normalize("/workspace/a.."),
            Err(PathError::DotComponent { .. })
        ));
        assert!(matches!(
            normalize("/workspace/x."),
            Err(PathError::DotComponent { .. })
        ));
        assert_eq!(
            normalize("/workspace/a\0b"),
            Err(PathError::ControlCharacter)
        );
        assert!(matches!(
            normalize("workspace/a"),
            Err(PathError::NotAbsolute { .. })
        ));
        assert!(matches!(normalize(""), Err(PathError::NotAbsolute { .. })));
        assert!(matches!(
            normalize(&"/a".repeat(3000)),
            Err(PathError::TooLong { .. })
        ));
    }

    #[test]
    fn scope_is_component_wise() {
        assert!(within("/workspace", "/workspace"));
        assert!(within("/workspace/a", "/workspace"));
        assert!(!within("/workspace2/a", "/workspace"));
        assert!(!within("/work", "/workspace"));
        assert!(within("/etc", "/"));
    }
}
