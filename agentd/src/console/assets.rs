//! The console's page, script and style: hand-written, compiled into the
//! binary (`include_str!`), nothing fetched from elsewhere at run time.
//! The script builds every element with `textContent` (never markup from
//! data), and charts as SVG elements of its own.

/// The app page (`{{CSRF}}` is replaced per session).
pub const INDEX_HTML: &str = include_str!("assets/index.html");
/// The app's script.
pub const APP_JS: &str = include_str!("assets/app.js");
/// The app's style.
pub const APP_CSS: &str = include_str!("assets/app.css");

/// Escapes text for HTML (element content and quoted attributes).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The app page for a session with CSRF token `csrf`.
pub fn index(csrf: &str) -> String {
    INDEX_HTML.replace("{{CSRF}}", &escape(csrf))
}

/// A small page saying why the app is not shown (sign in, link refused).
pub fn message_page(title: &str, code: &str, text: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>agentd console — {t}</title>\
         <link rel=\"stylesheet\" href=\"/assets/app.css\"></head><body class=\"message\">\
         <main><h1>{t}</h1><p class=\"code\" id=\"reason\">{c}</p><p>{x}</p></main></body></html>",
        t = escape(title),
        c = escape(code),
        x = escape(text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped_and_the_page_loads_nothing_from_elsewhere() {
        assert_eq!(
            escape(r#"<img src=x onerror="a('b')">&"#),
            "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&amp;"
        );
        let p = message_page("<b>", "x<y", "\"q\"");
        assert!(p.contains("&lt;b&gt;") && p.contains("x&lt;y") && !p.contains("<b>"));
        for asset in [INDEX_HTML, APP_JS, APP_CSS] {
            // The SVG namespace is a name, not a fetch.
            let asset = asset.replace("http://www.w3.org/2000/svg", "");
            for far in ["http://", "https://", "//cdn", "@import", "url("] {
                assert!(!asset.contains(far), "an asset refers to {far}");
            }
        }
        // The script never turns data into markup.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!APP_JS.contains(sink), "app.js uses {sink}");
        }
        assert!(index("ab12").contains("content=\"ab12\""));
    }
}
