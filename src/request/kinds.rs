//! The types a request's items, parts, blocks and tools can have, per client protocol, as enums.
//! The walk ([`super::walk`]) matches on them without a default arm: a type added here fails the
//! build until the walk says what it is (text the model reads, a media or file reference, a
//! tool call or output, a capability). A type in no enum is refused by name.

/// An enum of wire type names: `parse` from the name, `name` back, and `ALL` of them (for docs
/// and tests that must cover every type).
macro_rules! kinds {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vm])* $var),* }
        impl $name {
            /// Every type, in the order declared.
            pub const ALL: &'static [$name] = &[$($name::$var),*];
            /// The type of this name, if Meridian knows it.
            pub fn parse(s: &str) -> Option<$name> {
                match s { $($s => Some($name::$var),)* _ => None }
            }
            /// The name the wire uses.
            pub fn name(self) -> &'static str {
                match self { $($name::$var => $s),* }
            }
        }
    };
}

kinds! {
    /// A part of a chat message's `content` (OpenAI's create-chat-completion reference).
    ChatPart {
        Text = "text",
        ImageUrl = "image_url",
        InputAudio = "input_audio",
        File = "file",
        Refusal = "refusal",
    }
}

kinds! {
    /// A chat tool's `type` (absent means `function`).
    ChatTool {
        Function = "function",
        Custom = "custom",
    }
}

kinds! {
    /// An Anthropic content block, in a message, `system` or a tool result (Anthropic's
    /// create-message reference), including what an earlier turn's server tools returned.
    Block {
        Text = "text",
        Image = "image",
        Document = "document",
        SearchResult = "search_result",
        ToolUse = "tool_use",
        ToolResult = "tool_result",
        Thinking = "thinking",
        RedactedThinking = "redacted_thinking",
        ContainerUpload = "container_upload",
        ServerToolUse = "server_tool_use",
        McpToolUse = "mcp_tool_use",
        McpToolResult = "mcp_tool_result",
        WebSearchToolResult = "web_search_tool_result",
        WebFetchToolResult = "web_fetch_tool_result",
        CodeExecutionToolResult = "code_execution_tool_result",
        BashCodeExecutionToolResult = "bash_code_execution_tool_result",
        TextEditorCodeExecutionToolResult = "text_editor_code_execution_tool_result",
        ToolSearchToolResult = "tool_search_tool_result",
        ToolReference = "tool_reference",
        BrowserState = "browser_state",
    }
}

kinds! {
    /// A Responses `input` item (OpenAI's create-response reference): messages, calls and their
    /// outputs, reasoning, references to stored items, and what provider-run tools did in an
    /// earlier turn.
    Item {
        Message = "message",
        FunctionCall = "function_call",
        FunctionCallOutput = "function_call_output",
        CustomToolCall = "custom_tool_call",
        CustomToolCallOutput = "custom_tool_call_output",
        Reasoning = "reasoning",
        ItemReference = "item_reference",
        WebSearchCall = "web_search_call",
        FileSearchCall = "file_search_call",
        CodeInterpreterCall = "code_interpreter_call",
        ImageGenerationCall = "image_generation_call",
        McpCall = "mcp_call",
        McpListTools = "mcp_list_tools",
        McpApprovalRequest = "mcp_approval_request",
        McpApprovalResponse = "mcp_approval_response",
        ComputerCall = "computer_call",
        ComputerCallOutput = "computer_call_output",
        LocalShellCall = "local_shell_call",
        LocalShellCallOutput = "local_shell_call_output",
        ShellCall = "shell_call",
        ShellCallOutput = "shell_call_output",
        ApplyPatchCall = "apply_patch_call",
        ApplyPatchCallOutput = "apply_patch_call_output",
        ToolSearchCall = "tool_search_call",
        ToolSearchOutput = "tool_search_output",
        AdditionalTools = "additional_tools",
        ConfigurationUpdate = "configuration_update",
        Compaction = "compaction",
        CompactionTrigger = "compaction_trigger",
        Program = "program",
        ProgramOutput = "program_output",
    }
}

kinds! {
    /// A part of a Responses message's `content`, or of a tool output given as parts.
    Part {
        InputText = "input_text",
        OutputText = "output_text",
        Refusal = "refusal",
        InputAudio = "input_audio",
        InputImage = "input_image",
        InputFile = "input_file",
    }
}

/// A Responses tool: run by the client, or run by the provider (a capability).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponsesTool {
    /// `function`, `custom`, `computer_use_preview`, `computer`, `local_shell`, `apply_patch`,
    /// `tool_search`: the client runs them (a tool search looks only through the tools the
    /// request itself gives).
    Client,
    /// `shell`: the client's, unless its `environment` is a container the provider runs.
    Shell,
    /// `namespace`: a group of tools, each classified in turn.
    Namespace,
    /// `web_search`, `web_search_preview` and their dated versions.
    WebSearch,
    FileSearch,
    CodeInterpreter,
    /// `programmatic_tool_calling`: code the provider runs to call tools.
    ProgrammaticToolCalling,
    Mcp,
}

impl ResponsesTool {
    /// The client-run tool types.
    pub const CLIENT: &'static [&'static str] = &[
        "function",
        "custom",
        "computer_use_preview",
        "computer",
        "local_shell",
        "apply_patch",
        "tool_search",
    ];

    pub fn parse(kind: &str) -> Option<ResponsesTool> {
        Some(match kind {
            k if Self::CLIENT.contains(&k) => ResponsesTool::Client,
            k if k.starts_with("web_search") => ResponsesTool::WebSearch,
            "shell" => ResponsesTool::Shell,
            "namespace" => ResponsesTool::Namespace,
            "file_search" => ResponsesTool::FileSearch,
            "code_interpreter" => ResponsesTool::CodeInterpreter,
            "programmatic_tool_calling" => ResponsesTool::ProgrammaticToolCalling,
            "mcp" => ResponsesTool::Mcp,
            _ => return None,
        })
    }
}

/// An Anthropic tool: a client tool (no `type`, `custom`, or a versioned `bash_*`,
/// `text_editor_*`, `computer_*`, `memory_*`, and the tool search tools, which look only through
/// the request's own tools), or a server tool (a capability).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnthropicTool {
    Client,
    WebSearch,
    WebFetch,
    CodeExecution,
    Mcp,
}

impl AnthropicTool {
    pub fn parse(kind: Option<&str>) -> Option<AnthropicTool> {
        let Some(kind) = kind else {
            return Some(AnthropicTool::Client);
        };
        let starts = |p: &str| kind.starts_with(p);
        Some(
            if kind == "custom"
                || starts("bash_")
                || starts("text_editor_")
                || starts("computer_")
                || starts("memory_")
                || starts("tool_search_tool_")
            {
                AnthropicTool::Client
            } else if starts("web_search_") {
                AnthropicTool::WebSearch
            } else if starts("web_fetch_") {
                AnthropicTool::WebFetch
            } else if starts("code_execution_") {
                AnthropicTool::CodeExecution
            } else if kind == "mcp_toolset" {
                AnthropicTool::Mcp
            } else {
                return None;
            },
        )
    }
}

/// A Responses input item's type: its `type`, or `message` for one that has only a `role` (the
/// API's shorthand), or empty.
pub fn item_type(item: &serde_json::Value) -> &str {
    item.get("type")
        .and_then(serde_json::Value::as_str)
        .unwrap_or(if item.get("role").is_some() {
            "message"
        } else {
            ""
        })
}
