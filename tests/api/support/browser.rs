//! A cookie-carrying "browser" over reqwest, for the browser flow and the admin console.

use std::collections::HashMap;

use super::{TestApp, PUBLIC_URL};

/// A browser: follows nothing by itself, keeps cookies, and reaches idbridge's public URL
/// (`http://idbridge.test`) at the test server's address.
pub struct Browser<'a> {
    pub app: &'a TestApp,
    pub cookies: HashMap<String, String>,
    /// Each cookie's `Set-Cookie` line, for what a cross-site request carries.
    pub cookie_lines: HashMap<String, String>,
}

/// What a page or redirect gave back.
pub struct Visit {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
    pub headers: reqwest::header::HeaderMap,
    /// The raw `Set-Cookie` lines of this answer.
    pub set_cookies: Vec<String>,
}

impl<'a> Browser<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        Browser { app, cookies: HashMap::new(), cookie_lines: HashMap::new() }
    }

    pub fn local(&self, url: &str) -> String {
        if url.starts_with('/') {
            return self.app.url(url);
        }
        url.replacen(PUBLIC_URL, &self.app.address, 1)
    }

    pub fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    pub async fn read(&mut self, response: reqwest::Response) -> Visit {
        let mut set_cookies = Vec::new();
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap();
            set_cookies.push(text.to_string());
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            // A cookie set empty (Max-Age=0) is removed, as a browser does.
            if value.is_empty() {
                self.cookies.remove(name);
                self.cookie_lines.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
                self.cookie_lines.insert(name.to_string(), text.to_string());
            }
        }
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let location = response.headers().get("location").map(|l| l.to_str().unwrap().to_string());
        Visit { status, location, body: response.text().await.unwrap(), headers, set_cookies }
    }

    pub async fn get(&mut self, url: &str) -> Visit {
        let r =
            self.app.client.get(self.local(url)).header("cookie", self.cookie_header()).send().await.unwrap();
        self.read(r).await
    }

    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Visit {
        let r =
            self.app.client.post(self.local(url)).header("cookie", self.cookie_header()).form(form).send();
        let r = r.await.unwrap();
        self.read(r).await
    }

    /// A form POST from another site (a provider's `form_post` page): it carries only the
    /// cookies set `SameSite=None; Secure` whose `Path` covers the URL, as a browser does.
    pub async fn cross_site_post(&mut self, url: &str, form: &[(String, String)]) -> Visit {
        let path = url::Url::parse(&self.local(url)).unwrap().path().to_string();
        let carried: Vec<String> = self
            .cookies
            .iter()
            .filter(|(name, _)| {
                let line = self.cookie_lines[*name].to_ascii_lowercase();
                let attribute = |a: &str| line.split(';').map(str::trim).any(|p| p == a);
                let cookie_path = line
                    .split(';')
                    .map(str::trim)
                    .find_map(|p| p.strip_prefix("path="))
                    .unwrap_or("/")
                    .to_string();
                attribute("samesite=none") && attribute("secure") && path.starts_with(&cookie_path)
            })
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let r = self.app.client.post(self.local(url)).header("cookie", carried.join("; ")).form(form).send();
        let r = r.await.unwrap();
        self.read(r).await
    }

    /// A link followed from another site (a top-level GET): it carries only the cookies set
    /// `SameSite=Lax` or `None`, as a browser does.
    pub async fn cross_site_get(&mut self, url: &str) -> Visit {
        let carried: Vec<String> = self
            .cookies
            .iter()
            .filter(|(name, _)| {
                let line = self.cookie_lines[*name].to_ascii_lowercase();
                line.split(';').map(str::trim).any(|p| p == "samesite=lax" || p == "samesite=none")
            })
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let r =
            self.app.client.get(self.local(url)).header("cookie", carried.join("; ")).send().await.unwrap();
        self.read(r).await
    }

    /// Follows redirects until one leaves for `stop_at` (the app's redirect URI).
    pub async fn follow(&mut self, mut visit: Visit, stop_at: &str) -> Visit {
        for _ in 0..10 {
            match visit.location.clone() {
                Some(next) if !next.starts_with(stop_at) => visit = self.get(&next).await,
                _ => return visit,
            }
        }
        panic!("too many redirects");
    }
}
