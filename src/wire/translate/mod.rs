//! Translation between the two request and answer shapes Meridian speaks, named by what each
//! module produces from what: [`chat_from_messages`] makes OpenAI chat shapes (requests for
//! OpenAI-wire providers from Anthropic clients, answers for OpenAI clients from Anthropic
//! providers); [`messages_from_chat`] makes Anthropic Messages shapes (requests for Anthropic
//! providers from OpenAI clients, answers for Anthropic clients from OpenAI-wire providers);
//! [`chat_from_responses`] makes chat requests from OpenAI Responses requests, and
//! [`responses_from_chat`] Responses answers and events from chat answers and chunks, for
//! providers that do not serve `/v1/responses` themselves.
//! What a shape cannot express is named, never silently dropped. Pure.

pub mod chat_from_messages;
pub mod chat_from_responses;
pub mod messages_from_chat;
pub mod responses_from_chat;

#[cfg(test)]
mod tests;
