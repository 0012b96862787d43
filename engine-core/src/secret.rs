//! Connection URLs that never print their passwords.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A connection URL. `Display` and `Debug` replace the password with `***`; only
/// [`SecretUrl::expose`] gives the real string, for handing to a driver.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wrap a URL string (validated by [`crate::Config::validate`], not here).
    pub fn new(url: impl Into<String>) -> SecretUrl {
        SecretUrl(url.into())
    }

    /// The URL with its password, for the driver only. Never log this.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The scheme (`redis`, `postgres`, `sqlite`, ...), lower-cased, if the URL has one.
    pub fn scheme(&self) -> Option<String> {
        let (scheme, _) = self.0.split_once(':')?;
        let ok = !scheme.is_empty()
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        ok.then(|| scheme.to_ascii_lowercase())
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

/// Replace the password of `scheme://user:password@host...` with `***`; leave anything else
/// unchanged. Works on strings the `url` crate cannot parse too.
pub fn redact(s: &str) -> String {
    let Some(auth_start) = s.find("://").map(|i| i + 3) else {
        return s.to_owned();
    };
    let rest = &s[auth_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return s.to_owned();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => {
            format!("{}{}:***{}", &s[..auth_start], &userinfo[..colon], &s[auth_start + at..])
        }
        None => s.to_owned(),
    }
}

/// [`redact`] every URL inside a longer text (an error message quoting a value, say): the
/// password of each `scheme://user:password@host` becomes `***`; the rest is unchanged.
pub fn redact_all(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '`' | '\'') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@').map(|at| (at, authority[..at].find(':'))) {
            Some((at, Some(colon))) => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({:?})", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_print() {
        let u = SecretUrl::new("postgres://app:s3cr%40t@db:5432/x?sslmode=disable");
        assert_eq!(u.to_string(), "postgres://app:***@db:5432/x?sslmode=disable");
        assert!(!format!("{u:?}").contains("s3cr"));
        assert_eq!(u.expose(), "postgres://app:s3cr%40t@db:5432/x?sslmode=disable");
        assert_eq!(redact("redis://:pw@127.0.0.1/0"), "redis://:***@127.0.0.1/0");
        assert_eq!(redact("redis://user@host"), "redis://user@host");
        assert_eq!(redact("sqlite://data/a.db"), "sqlite://data/a.db");
        assert_eq!(redact("mysql://u:p@ss@h/db"), "mysql://u:***@h/db");
        assert_eq!(u.scheme().as_deref(), Some("postgres"));
    }

    #[test]
    fn every_url_in_a_text_is_redacted() {
        let msg =
            "got `mysql://a:pw1@h/x` and \"redis://:pw2@h:6379\", not sqlite://f.db or http://u@h";
        let r = redact_all(msg);
        assert!(!r.contains("pw1") && !r.contains("pw2"), "{r}");
        assert_eq!(
            r,
            "got `mysql://a:***@h/x` and \"redis://:***@h:6379\", not sqlite://f.db or http://u@h"
        );
        assert_eq!(redact_all("no url: a:b@c"), "no url: a:b@c");
    }
}
