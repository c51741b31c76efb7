//! Guards (`[[guards]]`): services, or Meridian's own detector, that judge what goes to a model
//! and what comes back, and the uses rules make of them (`[[rules.guards]]`). An external guard
//! is a recipient of the prompt: it has a location and data handling like a provider, and the
//! decision checks it against the same constraints before anything is sent to it.

use serde::{Deserialize, Serialize};

use crate::model::{BaseUrl, List, Text};
use crate::{Country, CountrySet};

/// What a guard looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuardKind {
    /// Prompt injection and jailbreak attempts, direct or hidden in tool output and documents.
    Injection,
    /// Harmful content by category.
    Moderation,
    /// Any label the operator defines.
    Classifier,
}

impl GuardKind {
    pub fn name(self) -> &'static str {
        match self {
            GuardKind::Injection => "injection",
            GuardKind::Moderation => "moderation",
            GuardKind::Classifier => "classifier",
        }
    }
}

/// How a guard is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuardWire {
    /// Meridian's own injection detector: nothing leaves the component.
    Builtin,
    /// OpenAI's `POST /moderations`.
    OpenAiModeration,
    /// A Llama Guard style model on an OpenAI-compatible engine (`POST /chat/completions`): its
    /// answer is `safe`, or `unsafe` and a line of categories.
    LlamaGuard,
    /// `POST` the text to a URL; the answer is labels with scores.
    HttpClassifier,
}

impl GuardWire {
    pub fn name(self) -> &'static str {
        match self {
            GuardWire::Builtin => "builtin",
            GuardWire::OpenAiModeration => "openai_moderation",
            GuardWire::LlamaGuard => "llama_guard",
            GuardWire::HttpClassifier => "http_classifier",
        }
    }
}

/// One guard of the catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Guard {
    pub id: Text,
    pub kind: GuardKind,
    pub wire: GuardWire,
    /// External guards: where requests go (`/moderations` or `/chat/completions` is appended
    /// for those wires; an `http_classifier` is posted to exactly this URL).
    pub url: Option<BaseUrl>,
    /// The model asked (`openai_moderation`: optional; `llama_guard`: required).
    pub model: Option<Text>,
    pub key_secret: Option<Text>,
    /// Where the guard processes what it is sent (a jurisdiction or country; `meridian` for the
    /// built-in detector, which sends nothing anywhere).
    pub location: Text,
    pub countries: CountrySet,
    pub single_country: Option<Country>,
    pub retention_days: Option<u32>,
    pub trains_on_inputs: Option<bool>,
    pub zdr: bool,
    pub self_hosted: bool,
    /// What one call costs, in US dollars, counted in limits.
    pub price_per_call: Option<f64>,
    /// The labels that count as a hit when a rule names none (`http_classifier`: required).
    pub labels: List<Text>,
    /// The most bytes of text one call is sent; a longer text is not judged (the rule's `fail`
    /// decides).
    pub max_input_bytes: u32,
    /// Where it keeps what it retains, when not where it processes.
    pub storage: Option<crate::evidence::Storage>,
    /// What a transfer to it rests on, when it is outside `[settings.record] home`.
    pub safeguard: Option<crate::evidence::Safeguard>,
}

impl Guard {
    pub fn is_builtin(&self) -> bool {
        self.wire == GuardWire::Builtin
    }

    /// The built-in detector as the catalog holds it: it runs inside Meridian and sends nothing
    /// anywhere, so everything but its id, kind and labels follows from that.
    pub fn builtin(id: Text, kind: GuardKind, labels: List<Text>) -> Guard {
        Guard {
            id,
            kind,
            wire: GuardWire::Builtin,
            url: None,
            model: None,
            key_secret: None,
            location: "meridian".into(),
            countries: CountrySet::new(),
            single_country: None,
            retention_days: Some(0),
            trains_on_inputs: Some(false),
            zdr: true,
            self_hosted: true,
            price_per_call: None,
            labels,
            max_input_bytes: u32::MAX,
            storage: None,
            safeguard: None,
        }
    }
}

/// Whoever is sent a request's data (a provider, an external guard): where it processes it and
/// how it handles it. The decision checks every recipient against the same constraints.
pub trait Recipient {
    fn location(&self) -> &str;
    /// The countries it may process data in, and the one country when there is only one.
    fn countries(&self) -> (&CountrySet, Option<Country>);
    fn self_hosted(&self) -> bool;
    fn zdr(&self) -> bool;
    fn trains_on_inputs(&self) -> Option<bool>;
    fn retention_days(&self) -> Option<u32>;
    /// Where it keeps what it retains, when it says so apart from where it processes.
    fn storage(&self) -> Option<&crate::evidence::Storage>;
    fn safeguard(&self) -> Option<crate::evidence::Safeguard>;

    /// Whether it is a pool of replicas, each in its own place: the decision then checks
    /// residency per replica, not here.
    fn pooled(&self) -> bool {
        false
    }

    /// Where it keeps what it retains, as written: its `storage`, else where it processes.
    fn stored_in(&self) -> &str {
        self.storage().map_or(self.location(), |s| &s.location)
    }

    /// Whether it processes or keeps data outside `home`: a transfer to a third country.
    fn transfers_from(&self, home: &CountrySet) -> bool {
        crate::evidence::outside(self.countries().0, self.storage(), home)
    }

    /// Whether every place it keeps data lies inside `allowed`.
    fn stores_within(&self, allowed: &CountrySet) -> bool {
        match self.storage() {
            Some(s) => s.countries.is_nonempty_subset(allowed),
            None => self.within(allowed),
        }
    }

    /// Whether every place it processes data lies inside `allowed`.
    fn within(&self, allowed: &CountrySet) -> bool {
        match self.countries() {
            (_, Some(c)) => allowed.contains(c),
            (all, None) => all.is_nonempty_subset(allowed),
        }
    }

    /// Whether it may train on inputs: unless its entry says it does not.
    fn may_train(&self) -> bool {
        self.trains_on_inputs() != Some(false)
    }

    /// Whether it keeps or learns from request data.
    fn collects_data(&self) -> bool {
        self.may_train() || (self.retention_days() != Some(0) && !self.zdr())
    }
}

impl Recipient for Guard {
    fn location(&self) -> &str {
        &self.location
    }
    fn countries(&self) -> (&CountrySet, Option<Country>) {
        (&self.countries, self.single_country)
    }
    fn self_hosted(&self) -> bool {
        self.self_hosted
    }
    fn zdr(&self) -> bool {
        self.zdr
    }
    fn trains_on_inputs(&self) -> Option<bool> {
        self.trains_on_inputs
    }
    fn retention_days(&self) -> Option<u32> {
        self.retention_days
    }
    fn storage(&self) -> Option<&crate::evidence::Storage> {
        self.storage.as_ref()
    }
    fn safeguard(&self) -> Option<crate::evidence::Safeguard> {
        self.safeguard
    }
}

/// Which side of a request a guard judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuardOn {
    /// What the client sends, before (or while) it goes to a provider.
    Input,
    /// The model's answer, before the client gets it (a stream in windows).
    Output,
}

impl GuardOn {
    pub fn name(self) -> &'static str {
        match self {
            GuardOn::Input => "input",
            GuardOn::Output => "output",
        }
    }
}

/// What a hit does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuardAction {
    /// The request is refused (an answer or stream is ended with an error).
    Refuse,
    /// Recorded in the audit only.
    Flag,
    /// The request is served by the named `[[routes]]` instead (input guards only).
    Route(Text),
}

impl GuardAction {
    pub fn name(&self) -> &'static str {
        match self {
            GuardAction::Refuse => "refuse",
            GuardAction::Flag => "flag",
            GuardAction::Route(_) => "route",
        }
    }
}

/// A rule's use of a guard (`[[rules.guards]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuardUse {
    /// The rule's position in `rules`.
    pub rule: u32,
    /// The guard's position in the catalog.
    pub guard: u32,
    pub on: GuardOn,
    pub action: GuardAction,
    /// A label's score at or above this is a hit; `None`: the guard's own judgement (flagged,
    /// `unsafe`, or a listed label present).
    pub threshold: Option<f64>,
    /// The labels that count; empty: the guard's `labels`, or any the guard flags.
    pub labels: List<Text>,
    pub timeout_ms: u64,
    /// A guard that fails, times out, or may not be sent the text lets the request through
    /// (recorded); `false`: the request is refused.
    pub fail_open: bool,
    /// The verdict before any provider is called, rather than beside the first attempt.
    pub before_send: bool,
}

/// The catalog and the rules' uses of it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Guards {
    /// In the compiled form (version 3 on), a built-in detector is its id, kind and labels.
    #[serde(with = "crate::compiled::catalog")]
    pub catalog: List<Guard>,
    pub uses: List<GuardUse>,
    /// Whether some use runs the built-in detector (the body's text is then scanned for it).
    pub builtin_used: bool,
}

impl Guards {
    pub fn is_empty(&self) -> bool {
        self.uses.is_empty()
    }

    pub fn get(&self, index: u32) -> Option<&Guard> {
        self.catalog.get(index as usize)
    }
}

/// The characters of a stream's text an output guard judges at a time: the client gets text up
/// to the last window cleared.
pub const OUTPUT_WINDOW_CHARS: usize = 1024;

/// The default for a guard's `max_input_bytes`.
pub const DEFAULT_MAX_INPUT_BYTES: u32 = 64 * 1024;

/// The default for a use's `timeout_ms`.
pub const DEFAULT_GUARD_TIMEOUT_MS: u64 = 2_000;
