//! Writes a validated policy as one Rust constant expression of static data, which `build.rs`
//! includes as the component's built-in policy: every string and list is borrowed from the
//! binary (`Cow::Borrowed`), so the component neither decodes nor allocates its policy.
//!
//! Each model type says how it is written; a new field that is not written here fails to
//! compile (the struct literals are exhaustive), and `tests` checks that what is written reads
//! back as the same policy.

use std::borrow::Cow;
use std::fmt::Write;

use crate::evidence::*;
use crate::guards::*;
use crate::model::*;
use crate::pool::*;

/// Writes `self` as a Rust constant expression (paths from the crate root, `::meridian_policy`).
pub trait Emit {
    fn emit(&self, out: &mut String);
}

/// The built-in policy as a Rust expression of type `meridian_policy::Policy`; its test cases
/// and warnings are left out (the component never uses them).
pub fn emit_policy(policy: &Policy) -> String {
    let mut out = String::new();
    policy.emit(&mut out);
    out
}

macro_rules! display {
    ($($t:ty),*) => {$(
        impl Emit for $t {
            fn emit(&self, out: &mut String) {
                let _ = write!(out, "{}", self);
            }
        }
    )*};
}
display!(bool, u8, u16, u32, u64, usize);

impl Emit for f64 {
    fn emit(&self, out: &mut String) {
        // Bit for bit, whatever the value (infinities included).
        let _ = write!(out, "f64::from_bits({:#x})", self.to_bits());
    }
}

impl Emit for Cow<'static, str> {
    fn emit(&self, out: &mut String) {
        // `str`'s Debug form is a valid Rust string literal (quotes and escapes).
        let _ = write!(out, "::std::borrow::Cow::Borrowed({:?})", self.as_ref());
    }
}

impl<T: Emit + Clone> Emit for Cow<'static, [T]> {
    fn emit(&self, out: &mut String) {
        out.push_str("::std::borrow::Cow::Borrowed(&[");
        for item in self.iter() {
            item.emit(out);
            out.push_str(", ");
        }
        out.push_str("])");
    }
}

impl<T: Emit> Emit for Option<T> {
    fn emit(&self, out: &mut String) {
        match self {
            None => out.push_str("::core::option::Option::None"),
            Some(v) => {
                out.push_str("::core::option::Option::Some(");
                v.emit(out);
                out.push(')');
            }
        }
    }
}

impl<A: Emit, B: Emit> Emit for (A, B) {
    fn emit(&self, out: &mut String) {
        out.push('(');
        self.0.emit(out);
        out.push_str(", ");
        self.1.emit(out);
        out.push(')');
    }
}

impl<T: Emit, const N: usize> Emit for [T; N] {
    fn emit(&self, out: &mut String) {
        out.push('[');
        for item in self {
            item.emit(out);
            out.push_str(", ");
        }
        out.push(']');
    }
}

/// A struct with public fields: `Path { field: value, … }`. The literal must name every field,
/// so a field added to the model and not here is a compile error in the generated code's test.
macro_rules! structs {
    ($($ty:ident { $($f:ident),* $(,)? })*) => {$(
        impl Emit for $ty {
            fn emit(&self, out: &mut String) {
                let $ty { $($f),* } = self;
                out.push_str(concat!("::meridian_policy::", stringify!($ty), " { "));
                $(
                    out.push_str(concat!(stringify!($f), ": "));
                    $f.emit(out);
                    out.push_str(", ");
                )*
                out.push('}');
            }
        }
    )*};
}

/// A tuple struct with one public field: `Path(value)`.
macro_rules! newtypes {
    ($($ty:ident),*) => {$(
        impl Emit for $ty {
            fn emit(&self, out: &mut String) {
                out.push_str(concat!("::meridian_policy::", stringify!($ty), "("));
                self.0.emit(out);
                out.push(')');
            }
        }
    )*};
}

/// A field-less enum: `Path::Variant`.
macro_rules! unit_enums {
    ($($ty:ident { $($v:ident),* $(,)? })*) => {$(
        impl Emit for $ty {
            fn emit(&self, out: &mut String) {
                out.push_str(match self {
                    $($ty::$v => concat!("::meridian_policy::", stringify!($ty), "::", stringify!($v)),)*
                });
            }
        }
    )*};
}

newtypes!(
    ProviderId,
    RuleId,
    TenantId,
    BaseUrl,
    ModelMap,
    ProviderSet,
    KindSet,
    CapSet
);

unit_enums! {
    WireKind { OpenAi, Azure, Anthropic }
    Sort { Price, Latency, Weighted, Nearest }
    Platform { None, Cloudflare, Cloudfront, Vercel, Fastly, Akamai, Spin, Custom, Legacy }
    CountryForm { Iso, Edgescape }
    AddressForm { Ip, IpPort }
    Anonymous { Deny, Keyless, Paid }
    UnknownFields { Refuse, Drop }
    AuditHeaders { Each, One }
    StreamEvents { Checked, Framed }
    Metric { Requests, Tokens, Usd }
    Window { Minute, Hour, Day, Month }
    LimitPer { Caller, Key }
    GuardKind { Injection, Moderation, Classifier }
    GuardWire { Builtin, OpenAiModeration, LlamaGuard, HttpClassifier }
    GuardOn { Input, Output }
    Safeguard { Adequacy, Dpf, Scc, Bcr }
    Balance { Prefix, LeastLoad }
    Engine { Vllm, Sglang, Llamacpp, None }
}

structs! {
    Settings {
        client, max_body_bytes, anonymous, expose_ratelimit_headers, audit_headers, plan, unknown_fields,
        affinity_header, limits, health, receipts, record, stream_events,
    }
    Receipts { key_secret, retired_keys, sequence, header }
    RecordSettings { controller, home }
    Storage { location, countries }
    LimitSettings { fail_open, default_max_tokens }
    Health { failures, window_s, cooldown_s }
    Limits { per, windows, concurrent }
    WindowLimit { metric, window, max }
    ClientSource { platform, country, address, edge_secret }
    CountryHeader { name, form }
    AddressHeader { name, form }
    EdgeSecret { header, secret }
    Provider {
        id, kind, base_url, key_secret, location, countries, single_country, retention_days,
        trains_on_inputs, zdr, self_hosted, models, latency_ms, weight, api_version, max_tokens,
        capabilities, anthropic_betas, responses, storage, safeguard, pool,
    }
    Pool { balance, engine, replicas, max_queue, load_bound, prefix_bytes, stale_after_s }
    Replica { name, base_url, metrics_url, location, countries, single_country }
    ModelEntry {
        upstream, input_price, output_price, cache_read_price, cache_write_price, context_window,
        max_output, option_price_factor,
    }
    ModelRoute { id, models }
    TokenRange { min, max }
    PrivacyFlags { zdr, no_training, local_only, no_data_collection }
    Tenant { id, key_hashes, models, jurisdictions, privacy, origins, max_tokens, limits, purposes }
    Residency { names, countries }
    Glob { text }
    Rule { id, when, require, prefer, plan, pii, limits, route }
    When {
        client_countries, edge_regions, tenants, anonymous, models, privacy, headers, stream,
        endpoints, edge_verified, pii, browser, input_tokens, tools, media,
    }
    Require { jurisdiction, self_hosted, privacy, providers, deny, max_price, capabilities, storage }
    MaxPrice { input, output }
    Prefer { order, sort, weights }
    FallbackOn { connect, timeout, malformed, statuses }
    Plan {
        attempt_timeout_ms, first_byte_timeout_ms, idle_timeout_ms, deadline_ms,
        stream_deadline_ms, retries, backoff_ms, fallback_on, hedge_after_ms,
    }
    PlanPatch {
        attempt_timeout_ms, first_byte_timeout_ms, idle_timeout_ms, deadline_ms,
        stream_deadline_ms, retries, backoff_ms, fallback_on, hedge_after_ms,
    }
    PiiConfig { custom, used }
    PiiAction { redact, restore, refuse }
    Guards { catalog, uses, builtin_used }
    Guard {
        id, kind, wire, url, model, key_secret, location, countries, single_country,
        retention_days, trains_on_inputs, zdr, self_hosted, price_per_call, labels,
        max_input_bytes, storage, safeguard,
    }
    GuardUse { rule, guard, on, action, threshold, labels, timeout_ms, fail_open, before_send }
}

impl Emit for GuardAction {
    fn emit(&self, out: &mut String) {
        match self {
            GuardAction::Refuse => out.push_str("::meridian_policy::GuardAction::Refuse"),
            GuardAction::Flag => out.push_str("::meridian_policy::GuardAction::Flag"),
            GuardAction::Route(route) => {
                out.push_str("::meridian_policy::GuardAction::Route(");
                route.emit(out);
                out.push(')');
            }
        }
    }
}

impl Emit for Country {
    fn emit(&self, out: &mut String) {
        out.push_str("::meridian_policy::Country::from_raw(");
        self.raw().emit(out);
        out.push(')');
    }
}

impl Emit for CountrySet {
    fn emit(&self, out: &mut String) {
        out.push_str("::meridian_policy::CountrySet::from_raw(");
        self.raw().emit(out);
        out.push(')');
    }
}

impl Emit for PiiWhen {
    fn emit(&self, out: &mut String) {
        match self {
            PiiWhen::Found(kinds) => {
                out.push_str("::meridian_policy::PiiWhen::Found(");
                kinds.emit(out);
                out.push(')');
            }
            PiiWhen::None => out.push_str("::meridian_policy::PiiWhen::None"),
        }
    }
}

impl Emit for Policy {
    fn emit(&self, out: &mut String) {
        // Written out by hand: test cases and warnings stay behind.
        let Policy {
            name,
            revision,
            digest,
            settings,
            jurisdictions,
            providers,
            tenants,
            routes,
            rules,
            pii,
            guards,
            cases: _,
            warnings: _,
        } = self;
        out.push_str("::meridian_policy::Policy { name: ");
        name.emit(out);
        out.push_str(", revision: ");
        revision.emit(out);
        out.push_str(", digest: ");
        digest.emit(out);
        out.push_str(", settings: ");
        settings.emit(out);
        out.push_str(", jurisdictions: ");
        jurisdictions.emit(out);
        out.push_str(", providers: ");
        providers.emit(out);
        out.push_str(", tenants: ");
        tenants.emit(out);
        out.push_str(", routes: ");
        routes.emit(out);
        out.push_str(", rules: ");
        rules.emit(out);
        out.push_str(", pii: ");
        pii.emit(out);
        out.push_str(", guards: ");
        guards.emit(out);
        out.push_str(", cases: ::std::vec::Vec::new(), warnings: ::std::vec::Vec::new() }");
    }
}
