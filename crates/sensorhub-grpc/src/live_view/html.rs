//! The two HTML documents the server renders: the login form and the
//! page's shell. Everything dynamic in the shell is filled in by
//! `assets/app.js` from the JSON payloads, with `textContent`, never
//! `innerHTML`; the little the server writes into HTML is escaped here.

/// Escapes text for an HTML element or a quoted attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

fn head(title: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{}</title>
<link rel="icon" href="/view/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/view/app.css">
</head>
"#,
        escape(title)
    )
}

/// The login form; `message` says why it is shown again.
pub fn login(message: Option<&str>) -> String {
    let message = message
        .map(|m| format!(r#"<p class="error" role="alert">{}</p>"#, escape(m)))
        .unwrap_or_default();
    format!(
        r#"{}<body class="login">
<main>
<h1><span class="logo" aria-hidden="true"></span>sensorhub</h1>
<p>The live view shows readings: log in with one of this server's tokens.</p>
<form method="post" action="/login">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" spellcheck="false" required autofocus>
<button type="submit">Log in</button>
{message}
</form>
</main>
</body>
</html>
"#,
        head("sensorhub · log in")
    )
}

/// The page's shell: the sections `app.js` fills in.
pub fn shell(login_required: bool) -> String {
    let logout = if login_required {
        r#"<form method="post" action="/logout" class="logout"><button type="submit">Log out</button></form>"#
    } else {
        r#"<span class="badge warn" title="the server runs with --no-auth">no login (--no-auth)</span>"#
    };
    format!(
        r#"{}<body>
<header>
<h1><span class="logo" aria-hidden="true"></span>sensorhub <small>live</small></h1>
<span id="status" class="status" role="status">connecting…</span>
{logout}
</header>
<main>
<section id="sensors" aria-labelledby="sensors-title">
<div class="section-head">
<h2 id="sensors-title">Sensors</h2>
<div class="ranges" role="group" aria-label="chart range">
<button type="button" data-range="15m" aria-pressed="true">15 min</button>
<button type="button" data-range="1h" aria-pressed="false">1 h</button>
<button type="button" data-range="24h" aria-pressed="false">24 h</button>
</div>
</div>
<div id="charts" class="charts"></div>
<div class="table-wrap">
<table id="sensor-table">
<thead><tr><th>sensor</th><th class="num">readings</th><th class="num">last °C</th><th>at</th><th class="num">min</th><th class="num">max</th><th class="num">mean</th><th class="num">rolling</th><th class="num">alerts</th></tr></thead>
<tbody></tbody>
</table>
</div>
<p id="more-sensors" class="note" hidden>More sensors are stored than this page shows.</p>
</section>
<section id="alerts" aria-labelledby="alerts-title">
<h2 id="alerts-title">Alerts</h2>
<ol id="alert-feed" class="feed"></ol>
<p id="no-alerts" class="note">No alerts since the server started.</p>
</section>
<section id="in-flight" aria-labelledby="in-flight-title">
<h2 id="in-flight-title">In flight <span id="in-flight-count" class="count"></span></h2>
<div class="table-wrap">
<table id="in-flight-table">
<thead><tr><th>method</th><th>peer</th><th class="num">age</th><th class="num">received</th><th class="num">sent</th><th>trace</th></tr></thead>
<tbody></tbody>
</table>
</div>
</section>
<section id="calls" aria-labelledby="calls-title">
<h2 id="calls-title">Calls</h2>
<div class="table-wrap">
<table id="call-table">
<thead>
<tr><th rowspan="2">method</th><th rowspan="2">status</th><th colspan="5" class="group">last minute</th><th colspan="5" class="group">last hour</th></tr>
<tr><th class="num">calls/s</th><th class="num">errors</th><th class="num">p50 ms</th><th class="num">p90</th><th class="num">p99</th><th class="num">calls/s</th><th class="num">errors</th><th class="num">p50 ms</th><th class="num">p90</th><th class="num">p99</th></tr>
</thead>
<tbody></tbody>
</table>
</div>
</section>
<section id="traces" aria-labelledby="traces-title">
<h2 id="traces-title">Traces</h2>
<div class="table-wrap">
<table id="tracez-table"><thead></thead><tbody></tbody></table>
</div>
<h3>Recent errors</h3>
<ol id="trace-errors" class="feed"></ol>
<p id="no-errors" class="note">No failed calls kept.</p>
<div id="trace-detail" class="trace-detail" hidden></div>
</section>
<section id="store" aria-labelledby="store-title">
<h2 id="store-title">Store</h2>
<dl id="store-stats" class="stats"></dl>
</section>
</main>
<script type="module" src="/view/app.js"></script>
</body>
</html>
"#,
        head("sensorhub · live")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape(r#"<script>"a" & 'b'</script>"#),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn the_form_posts_a_token_field_and_the_shell_has_no_inline_script() {
        let form = login(Some("<wrong>"));
        assert!(form.contains(r#"<form method="post" action="/login">"#));
        assert!(form.contains(r#"name="token""#));
        assert!(form.contains("&lt;wrong&gt;"));
        for page in [form, shell(true), shell(false)] {
            for (at, _) in page.match_indices("<script") {
                assert!(page[at..].starts_with(r#"<script type="module" src="/view/app.js">"#));
            }
            assert!(!page.contains(" style=") && !page.contains(" onclick="));
        }
    }
}
