//! Hard constraints: each set (a rule's `require`, the tenant's, anonymous access, the
//! request's) only ever removes providers, one test kind at a time over all serving providers.

use super::reasons::{Message, Reason, ReasonKind, Who};
use crate::policy::{
    MaxPrice, ModelEntry, PrivacyFlags, Provider, ProviderSet, Recipient, Residency,
};

/// Providers a constraint names: the policy's own set (catalog positions), or the request's ids.
#[derive(Clone, Copy)]
pub(super) enum Ids<'a> {
    Policy(&'a ProviderSet),
    Request(&'a [String]),
}

impl Ids<'_> {
    #[inline]
    fn contains(&self, index: usize, p: &Provider) -> bool {
        match self {
            Ids::Policy(s) => s.contains(index),
            Ids::Request(v) => v.iter().any(|id| *id == *p.id.0),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Ids::Policy(s) => s.is_empty(),
            Ids::Request(v) => v.is_empty(),
        }
    }
}

/// One set of hard constraints and who imposed it (`'p`: the policy, `'f`: the request's facts).
pub(super) struct Constraint<'p, 'f> {
    pub(super) by: Who<'p>,
    pub(super) residency: Option<&'p Residency>,
    /// Where recipients may keep what they retain (`require.storage`).
    pub(super) storage: Option<&'p Residency>,
    pub(super) self_hosted: bool,
    pub(super) privacy: PrivacyFlags,
    pub(super) allow: Option<Ids<'f>>,
    pub(super) deny: Ids<'f>,
    pub(super) max_price: MaxPrice,
    /// Only providers without a `key_secret`.
    pub(super) keyless: bool,
    /// The request asks the provider to store the conversation (`store: true`): a zero-retention
    /// or no-data-collection constraint then excludes every provider.
    pub(super) stores: bool,
}

impl<'p, 'f> Constraint<'p, 'f> {
    pub(super) fn new(by: Who<'p>) -> Self {
        Constraint {
            by,
            residency: None,
            storage: None,
            self_hosted: false,
            privacy: PrivacyFlags::default(),
            allow: None,
            deny: Ids::Request(&[]),
            max_price: MaxPrice::default(),
            keyless: false,
            stores: false,
        }
    }

    /// Whether this constraint can exclude anything at all (most rules only route).
    pub(super) fn binds(&self) -> bool {
        self.residency.is_some()
            || self.storage.is_some()
            || self.self_hosted
            || self.privacy != PrivacyFlags::default()
            || self.allow.is_some()
            || !self.deny.is_empty()
            || self.max_price.is_set()
            || self.keyless
    }

    /// Whether the constraint says anything about how a recipient handles data.
    fn limits_handling(&self) -> bool {
        let q = self.privacy;
        self.self_hosted || q.local_only || q.zdr || q.no_training || q.no_data_collection
    }

    /// Appends a reason for every way a recipient of the request's data (a provider, an
    /// external guard) breaks this constraint's residency and privacy: where it processes the
    /// data, and how it handles it.
    /// `stores`: the recipient is asked to keep the conversation (a provider under `store`).
    pub(super) fn recipient_reasons<R: Recipient>(
        &self,
        r: &'p R,
        stores: bool,
        out: &mut Vec<Reason<'p>>,
    ) {
        let reason = |kind, message| Reason {
            by: self.by,
            kind,
            message,
        };
        // A pool's residency and storage are checked per replica ([`Self::replicas_within`]).
        if let Some(res) = self.residency.filter(|_| !r.pooled()) {
            if !r.within(&res.countries) {
                out.push(reason(
                    ReasonKind::Residency,
                    Message::Outside {
                        location: r.location(),
                        allowed: &res.names,
                    },
                ));
            }
        }
        if let Some(res) = self.storage.filter(|_| !r.pooled()) {
            if !r.stores_within(&res.countries) {
                out.push(reason(
                    ReasonKind::Residency,
                    Message::StoredOutside {
                        location: r.stored_in(),
                        allowed: &res.names,
                    },
                ));
            }
        }
        if !self.limits_handling() {
            return;
        }
        let q = self.privacy;
        if (self.self_hosted || q.local_only) && !r.self_hosted() {
            out.push(reason(ReasonKind::Privacy, Message::NotSelfHosted));
        }
        if q.zdr && !r.zdr() {
            out.push(reason(ReasonKind::Privacy, Message::NoZdr));
        }
        if (q.zdr || q.no_data_collection) && stores {
            out.push(reason(ReasonKind::Capability, Message::StoreOnZdr));
        }
        if q.no_training && r.may_train() {
            out.push(reason(
                ReasonKind::Privacy,
                match r.trains_on_inputs() {
                    Some(true) => Message::TrainsOnInputs,
                    _ => Message::TrainingUnstated,
                },
            ));
        }
        if q.no_data_collection && r.collects_data() {
            out.push(reason(
                ReasonKind::Privacy,
                Message::CollectsData {
                    retention_days: r.retention_days(),
                    trains_on_inputs: r.trains_on_inputs(),
                },
            ));
        }
    }

    /// The replicas of `pool` (a mask) that this constraint's residency and storage allow; a
    /// replica keeps data where it processes it unless its provider states `storage`.
    pub(super) fn replicas_within(&self, p: &Provider, pool: &crate::policy::Pool) -> u64 {
        let mut mask = 0u64;
        for (i, r) in pool.replicas.iter().enumerate() {
            let placed = self.residency.is_none_or(|res| r.within(&res.countries));
            let stored = self.storage.is_none_or(|res| match &p.storage {
                Some(_) => p.stores_within(&res.countries),
                None => r.within(&res.countries),
            });
            if placed && stored {
                mask |= 1 << i;
            }
        }
        mask
    }

    /// The reason this constraint leaves no replica of a pool.
    pub(super) fn pool_reason(&self, p: &'p Provider) -> Reason<'p> {
        let (kind, message) = match (self.residency, self.storage) {
            (Some(res), _) => (
                ReasonKind::Residency,
                Message::Outside {
                    location: p.location(),
                    allowed: &res.names,
                },
            ),
            (None, Some(res)) => (
                ReasonKind::Residency,
                Message::StoredOutside {
                    location: p.stored_in(),
                    allowed: &res.names,
                },
            ),
            (None, None) => (ReasonKind::Scope, Message::NotAllowed),
        };
        Reason {
            by: self.by,
            kind,
            message,
        }
    }

    /// Appends to `reasons[k]` a reason for every way `serving[k]` breaks this constraint.
    ///
    /// One pass per kind of test over all providers, so each pass is a tight, predictable loop.
    pub(super) fn check_all(&self, serving: &[Serving<'p>], reasons: &mut [Vec<Reason<'p>>]) {
        macro_rules! each {
            () => {
                serving.iter().zip(reasons.iter_mut())
            };
        }
        let reason = |kind, message| Reason {
            by: self.by,
            kind,
            message,
        };
        if self.residency.is_some() || self.storage.is_some() || self.limits_handling() {
            for ((_, p, _), out) in each!() {
                self.recipient_reasons(*p, self.stores, out);
            }
        }
        if let Some(allow) = &self.allow {
            for ((index, p, _), out) in each!() {
                if !allow.contains(*index, p) {
                    out.push(reason(ReasonKind::Scope, Message::NotAllowed));
                }
            }
        }
        if !self.deny.is_empty() {
            for ((index, p, _), out) in each!() {
                if self.deny.contains(*index, p) {
                    out.push(reason(ReasonKind::Scope, Message::Denied));
                }
            }
        }
        if self.keyless {
            for ((_, p, _), out) in each!() {
                if p.key_secret.is_some() {
                    out.push(reason(ReasonKind::Scope, Message::SpendsKey));
                }
            }
        }
        if self.max_price.is_set() {
            let cap = self.max_price;
            for ((_, _, m), out) in each!() {
                if let Some(why) = over_price(cap.input, m.input_price, "input") {
                    out.push(reason(ReasonKind::Price, why));
                }
                if let Some(why) = over_price(cap.output, m.output_price, "output") {
                    out.push(reason(ReasonKind::Price, why));
                }
            }
        }
    }
}

/// Appends the capability reasons for every serving provider: the request's capabilities must
/// be carried by the provider's wire for this endpoint, granted to the provider, and not
/// withdrawn by a matched rule; an Anthropic provider must allow every `anthropic-beta` value.
pub(super) fn check_capabilities<'p>(
    facts: &crate::facts::RequestFacts,
    matched: &[&'p crate::policy::Rule],
    serving: &[Serving<'p>],
    reasons: &mut [Vec<Reason<'p>>],
) {
    use crate::policy::WireKind;
    let need = facts.capabilities;
    let betas = facts.endpoint == crate::request::Endpoint::Messages && !facts.betas.is_empty();
    if need.is_empty() && !betas {
        return;
    }
    for ((_, p, _), out) in serving.iter().zip(reasons.iter_mut()) {
        let carried = crate::wire::carries(p, facts.endpoint);
        for c in need.iter() {
            if !carried.contains(c) {
                out.push(Reason {
                    by: Who::Request,
                    kind: ReasonKind::Capability,
                    message: Message::WireLacks {
                        capability: c,
                        wire: p.kind.name(),
                    },
                });
            } else if !p.capabilities.contains(c) {
                out.push(Reason {
                    by: Who::Request,
                    kind: ReasonKind::Capability,
                    message: Message::NotGranted { capability: c },
                });
            } else if let Some(r) = matched.iter().find(|r| {
                r.require
                    .capabilities
                    .is_some_and(|allowed| !allowed.contains(c))
            }) {
                out.push(Reason {
                    by: Who::Rule(&r.id),
                    kind: ReasonKind::Capability,
                    message: Message::Withdrawn { capability: c },
                });
            }
        }
        if betas && p.kind == WireKind::Anthropic {
            let allowed = |b: &str| {
                crate::policy::capability::beta_capability(b).is_some()
                    || p.anthropic_betas.iter().any(|g| g.matches(b))
            };
            if !facts.betas.iter().all(|b| allowed(b)) {
                out.push(Reason {
                    by: Who::Request,
                    kind: ReasonKind::Capability,
                    message: Message::BetaNotAllowed,
                });
            }
        }
    }
}

/// Why a price breaks a maximum: above it, or unknown (so it cannot be proven below).
#[inline]
fn over_price(
    limit: Option<f64>,
    price: Option<f64>,
    what: &'static str,
) -> Option<Message<'static>> {
    match (limit, price) {
        (Some(limit), Some(price)) if price > limit => {
            Some(Message::AbovePrice { what, price, limit })
        }
        (Some(_), None) => Some(Message::NoPrice { what }),
        _ => None,
    }
}

/// A provider that serves the requested model: catalog position, entry, model entry.
pub(super) type Serving<'p> = (usize, &'p Provider, &'p ModelEntry);
