//! Git remote URLs, normalised so that every spelling of one repository is one repository.
//!
//! `git@github.com:acme/backend`, `https://github.com/acme/backend.git`,
//! `ssh://git@github.com:22/acme/backend` and `https://user:token@GitHub.com/acme/backend/` all
//! become host `github.com`, slug `acme/backend`. Credentials are dropped (never stored), the host
//! is lower-cased, the path keeps its case (GitLab paths are case-sensitive) but loses `.git` and
//! trailing slashes. Local paths (`/srv/git/app.git`, `file://…`) keep host `local`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`remote_url` is not a git remote URL: {0}")]
pub struct RemoteUrlError(String);

/// A parsed, normalised remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    host: String,
    slug: String,
}

impl RemoteUrl {
    pub fn parse(raw: &str) -> Result<Self, RemoteUrlError> {
        let err = || RemoteUrlError(raw.chars().take(200).collect());
        let s = raw.trim();
        if s.is_empty() || s.len() > 2048 || s.chars().any(char::is_whitespace) {
            return Err(err());
        }
        let (host, path) = if let Some((scheme, rest)) = s.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            if scheme == "file" {
                ("local".to_string(), rest)
            } else if matches!(scheme.as_str(), "http" | "https" | "ssh" | "git" | "git+ssh") {
                let (authority, path) = rest.split_once('/').ok_or_else(err)?;
                let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                let host = host_port.split(':').next().unwrap_or_default();
                (host.to_ascii_lowercase(), path)
            } else {
                return Err(err());
            }
        } else if s.starts_with('/') {
            ("local".to_string(), s)
        } else if let Some((authority, path)) = s.split_once(':') {
            // scp-like syntax: [user@]host:path
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            (host.to_ascii_lowercase(), path)
        } else {
            return Err(err());
        };
        if host.is_empty() {
            return Err(err());
        }
        let path = path.trim_matches('/');
        let path = path.strip_suffix(".git").unwrap_or(path).trim_end_matches('/');
        let slug = path.split('/').filter(|seg| !seg.is_empty()).collect::<Vec<_>>().join("/");
        if slug.is_empty() {
            return Err(err());
        }
        Ok(Self { host, slug })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// `owner/name` (or the full group path on GitLab).
    pub fn slug(&self) -> &str {
        &self.slug
    }

    /// The canonical URL we store and show.
    pub fn canonical(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host == "local" {
            write!(f, "file:///{}", self.slug)
        } else {
            write!(f, "https://{}/{}", self.host, self.slug)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_and_https_spellings_are_the_same_repository() {
        let spellings = [
            "git@github.com:acme/backend",
            "git@github.com:acme/backend.git",
            "https://github.com/acme/backend.git",
            "https://github.com/acme/backend/",
            "https://user:secret@GitHub.com/acme/backend",
            "ssh://git@github.com:22/acme/backend.git",
        ];
        for s in spellings {
            let r = RemoteUrl::parse(s).unwrap();
            assert_eq!((r.host(), r.slug()), ("github.com", "acme/backend"), "{s}");
            assert_eq!(r.canonical(), "https://github.com/acme/backend");
        }
    }

    #[test]
    fn nested_group_paths_keep_every_segment() {
        let r = RemoteUrl::parse("git@gitlab.com:group/sub/Project.git").unwrap();
        assert_eq!(r.slug(), "group/sub/Project");
    }

    #[test]
    fn credentials_never_reach_the_canonical_form() {
        let r = RemoteUrl::parse("https://x-token:ghp_abc@github.com/a/b").unwrap();
        assert!(!r.canonical().contains("ghp_abc"));
    }

    #[test]
    fn things_that_are_not_remotes_are_refused() {
        for s in ["", "backend", "https://github.com", "ftp://x/y", "git@github.com:"] {
            assert!(RemoteUrl::parse(s).is_err(), "{s:?}");
        }
    }
}
