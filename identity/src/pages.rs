//! The few server-rendered pages: the login form and plain messages. Every interpolated value is
//! HTML-escaped; pages may not be framed (clickjacking) or cached.

use http::{header, HeaderValue, StatusCode};

use crate::reply::{respond, Reply};

pub fn html(status: StatusCode, body: &str) -> Reply {
    let mut r = respond(status, "text/html; charset=utf-8", body.as_bytes().to_vec());
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

pub fn login(client_id: &str, request_id: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, escape(e)))
        .unwrap_or_default();
    layout(
        "Sign in",
        &format!(
            r#"<h1>Sign in</h1>
<p>to continue to <strong>{client}</strong></p>
{error}
<form method="post" action="login">
<input type="hidden" name="request" value="{request}">
<label>Username <input name="username" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button>
</form>"#,
            client = escape(client_id),
            request = escape(request_id),
        ),
    )
}

pub fn message(title: &str, text: &str) -> String {
    layout(
        title,
        &format!("<h1>{}</h1>\n<p>{}</p>", escape(title), escape(text)),
    )
}

fn layout(title: &str, main: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{} · Gatehouse</title>
<style>body{{font-family:system-ui,sans-serif;max-width:24rem;margin:4rem auto;padding:0 1rem}}
label{{display:block;margin:.8rem 0}}input{{display:block;width:100%;padding:.4rem}}
button{{padding:.5rem 1.2rem}}.error{{color:#b00020}}</style></head>
<body><main>
{main}
</main></body></html>
"#,
        escape(title)
    )
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
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

#[cfg(test)]
mod tests {
    #[test]
    fn interpolated_values_are_escaped() {
        let page = super::login("<script>", "\"x", Some("a&b"));
        assert!(!page.contains("<script>"));
        assert!(
            page.contains("&lt;script&gt;") && page.contains("&quot;x") && page.contains("a&amp;b")
        );
    }
}
