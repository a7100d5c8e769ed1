use crate::profile::Profile;
use serde::{Deserialize, Serialize};

/// The outcome of one request, as a client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Any 2xx.
    Ok,
    /// Any 4xx.
    Http4xx,
    Http500,
    Http502,
    Http503,
    Http504,
    /// Connect failed with ECONNREFUSED, or the Service had no endpoint.
    Refused,
    /// The connection was reset or closed before a full response arrived.
    Reset,
    /// No full response within the request timeout (or connect timeout).
    Timeout,
    /// Anything else, other 5xx included.
    Other,
}

impl Class {
    pub const ALL: [Class; 10] = [
        Class::Ok,
        Class::Http4xx,
        Class::Http500,
        Class::Http502,
        Class::Http503,
        Class::Http504,
        Class::Refused,
        Class::Reset,
        Class::Timeout,
        Class::Other,
    ];
    /// The failure classes, in the order reports show them.
    pub const FAILURES: [Class; 8] = [
        Class::Refused,
        Class::Reset,
        Class::Timeout,
        Class::Http502,
        Class::Http503,
        Class::Http504,
        Class::Http500,
        Class::Other,
    ];

    /// The key used in report.json (`refused`, `http_503`, ...).
    pub fn key(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::Http4xx => "http_4xx",
            Class::Http500 => "http_500",
            Class::Http502 => "http_502",
            Class::Http503 => "http_503",
            Class::Http504 => "http_504",
            Class::Refused => "refused",
            Class::Reset => "reset",
            Class::Timeout => "timeout",
            Class::Other => "other",
        }
    }

    /// A failed request: anything but 2xx. 4xx counts too: the generator only sends
    /// valid requests, so a 4xx is a server bug.
    pub fn is_failure(self) -> bool {
        self != Class::Ok
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Fast,
    Slow,
    Job,
}

/// One request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Intended start, in microseconds since the run started.
    pub at_us: u64,
    /// From intended start to the end of the response (or the failure).
    pub latency_us: u64,
    pub class: Class,
    pub kind: Kind,
    /// Sent more than 1 ms after its intended start.
    pub late: bool,
    /// The pod that answered (its `x-zd-pod` response header), as an index into
    /// [`RunResult::pods`]; `None` when no response head arrived (refused, reset,
    /// timeout) or the answer named no pod. Lets the report tie an outcome to the
    /// endpoint it landed on, which the client cannot see behind a Service address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<u16>,
    /// Carried the profile's marker header ([`crate::Mark`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub marked: bool,
    /// The client it came from ([`crate::Clients`]), when the profile has clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<u32>,
}

impl Record {
    /// A record with the four fields every record has and the optional ones off (on
    /// time, no pod, unmarked, no client), so a test builds one in a line and a new
    /// optional field needs no edit where it is not used.
    pub fn new(at_us: u64, latency_us: u64, class: Class, kind: Kind) -> Record {
        Record { at_us, latency_us, class, kind, late: false, pod: None, marked: false, client: None }
    }

    /// Sets [`Record::late`]; takes the flag, not just "on", so a computed value passes through.
    #[must_use]
    pub fn with_late(mut self, late: bool) -> Record {
        self.late = late;
        self
    }

    /// Sets [`Record::pod`]; takes the `Option` so an unanswered request (`None`) needs no branch.
    #[must_use]
    pub fn with_pod(mut self, pod: Option<u16>) -> Record {
        self.pod = pod;
        self
    }

    /// Sets [`Record::marked`]; takes the flag so a row's computed marking passes through.
    #[must_use]
    pub fn with_marked(mut self, marked: bool) -> Record {
        self.marked = marked;
        self
    }

    /// Sets [`Record::client`]; takes the `Option` as the profile's clients give it.
    #[must_use]
    pub fn with_client(mut self, client: Option<u32>) -> Record {
        self.client = client;
        self
    }
}

/// The copy of request `seq` ([`RunResult::records`]`[seq]`
/// is its original): what the shadow answered, timed from the same intended start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mirrored {
    pub seq: u64,
    pub record: Record,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Wall-clock start of the run (unix epoch, milliseconds): `at_us` is relative to it.
    pub started_unix_ms: u64,
    pub profile: Profile,
    pub records: Vec<Record>,
    /// Ids of jobs answered 202, for reconciliation against the ledger.
    pub accepted_jobs: Vec<String>,
    pub late_sends: u64,
    pub connections_opened: u64,
    /// Pod names seen in responses; [`Record::pod`] indexes into it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<String>,
    /// The shadow's answers to the copied requests ([`crate::profile::Mirror`]), in sequence
    /// order; they count nowhere else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrored: Vec<Mirrored>,
    /// Ids of the jobs whose copy was answered 202: what the shadow's ledger should hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrored_accepted_jobs: Vec<String>,
}

impl RunResult {
    /// The name of the pod that answered `r`, if known.
    pub fn pod_of(&self, r: &Record) -> Option<&str> {
        r.pod.and_then(|i| self.pods.get(i as usize)).map(String::as_str)
    }
}
