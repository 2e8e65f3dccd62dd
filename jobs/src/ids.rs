//! Prefixed identifiers (Stripe style): `ses_0190…`, a short type prefix and the 32 hex digits of a
//! UUIDv7. The prefix makes an id self-describing in logs and URLs, and a wrong prefix is caught at
//! the boundary (a `run_` id where a `ses_` id belongs is a 400/404, never a confused lookup).
//! UUIDv7 keeps ids time-ordered, which keeps the primary-key indexes append-mostly.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// Why a string is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("expected an id starting with `{expected}_`")]
    WrongPrefix { expected: &'static str },
    #[error("malformed id: expected `{expected}_` followed by 32 hex digits")]
    Malformed { expected: &'static str },
}

macro_rules! prefixed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, sqlx::Type)]
        #[sqlx(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh, time-ordered id.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}_{}", $prefix, self.0.simple())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_prefixed(s, $prefix).map(Self)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

fn parse_prefixed(s: &str, prefix: &'static str) -> Result<Uuid, IdError> {
    let Some((p, rest)) = s.split_once('_') else {
        return Err(IdError::Malformed { expected: prefix });
    };
    if p != prefix {
        return Err(IdError::WrongPrefix { expected: prefix });
    }
    if rest.len() != 32 || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(IdError::Malformed { expected: prefix });
    }
    Uuid::try_parse(rest).map_err(|_| IdError::Malformed { expected: prefix })
}

prefixed_id!(/// An organisation (tenant).
    OrgId, "org");
prefixed_id!(/// A user of an organisation.
    UserId, "usr");
prefixed_id!(/// An API key (the secret is never stored, only its hash).
    ApiKeyId, "key");
prefixed_id!(/// A project grouping repositories.
    ProjectId, "proj");
prefixed_id!(/// A repository, identified by its normalised remote URL.
    RepoId, "repo");
prefixed_id!(/// One start of the CLI.
    RunId, "run");
prefixed_id!(/// A conversation, which the API calls a session.
    SessionId, "ses");
prefixed_id!(/// Work inside a conversation: a subagent or an agent-team task.
    TaskId, "task");
prefixed_id!(/// A stored hook event.
    EventId, "evt");
prefixed_id!(/// A background job. Same 128 bits as the apalis task id (a ULID) it names.
    JobId, "job");
prefixed_id!(/// A context compaction.
    CompactionId, "cmp");

impl JobId {
    /// Job ids are generated as ULIDs because apalis-redis keys tasks by ULID; a ULID and a UUID
    /// are both 128 bits, so one value serves as both without a lookup table.
    pub fn generate_ulid() -> (Self, ulid::Ulid) {
        let ulid = ulid::Ulid::generate();
        (Self(Uuid::from_u128(ulid.0)), ulid)
    }

    pub fn ulid(&self) -> ulid::Ulid {
        ulid::Ulid(self.0.as_u128())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_round_trips_through_its_text_form() {
        let id = SessionId::generate();
        let text = id.to_string();
        assert!(text.starts_with("ses_"));
        assert_eq!(text.len(), 4 + 32);
        assert_eq!(text.parse::<SessionId>().unwrap(), id);
    }

    #[test]
    fn a_wrong_prefix_is_named_in_the_error() {
        let run = RunId::generate().to_string();
        assert_eq!(run.parse::<SessionId>(), Err(IdError::WrongPrefix { expected: "ses" }));
        assert_eq!("ses_123".parse::<SessionId>(), Err(IdError::Malformed { expected: "ses" }));
        assert!("threads".parse::<SessionId>().is_err());
    }

    #[test]
    fn a_job_id_and_its_queue_task_id_are_the_same_bits() {
        let (job, ulid) = JobId::generate_ulid();
        assert_eq!(job.ulid(), ulid);
        assert_eq!(job.to_string().parse::<JobId>().unwrap().ulid(), ulid);
    }
}
