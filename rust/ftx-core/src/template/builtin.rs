//! Chat templates shipped with ftx, for base models whose tokenizer has none. Each one is ftx's
//! own text, written for ftx in the conventional form of its family (not copied from a model
//! repository). They write the turn tokens as text: a base model's tokenizer may not have them as
//! special tokens, in which case they are learned as ordinary text.

const NAMES: &[&str] = &["chatml", "alpaca", "llama3", "mistral", "zephyr"];

/// The source of the built-in template `name`.
pub fn builtin(name: &str) -> Option<&'static str> {
    Some(match name {
        "chatml" => CHATML,
        "alpaca" => ALPACA,
        "llama3" => LLAMA3,
        "mistral" => MISTRAL,
        "zephyr" => ZEPHYR,
        _ => return None,
    })
}

pub fn builtin_names() -> &'static [&'static str] {
    NAMES
}

/// ftx's own ChatML template; tools in the Hermes/Qwen2.5 `<tool_call>` convention.
const CHATML: &str = r#"{#- ftx's own ChatML template (written for ftx). -#}
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
    {%- for tool in tools %}
        {{- '\n' + tool | tojson }}
    {%- endfor %}
    {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' }}
{%- elif messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'system' %}
        {%- if not loop.first %}
            {{- raise_exception('A system message is only allowed first') }}
        {%- endif %}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant\n' + message.content }}
        {%- for call in message.tool_calls or [] %}
            {%- if not loop.first or message.content %}
                {{- '\n' }}
            {%- endif %}
            {{- '<tool_call>\n{"name": "' + call.function.name + '", "arguments": ' }}
            {%- if call.function.arguments is string %}
                {{- call.function.arguments }}
            {%- else %}
                {{- call.function.arguments | tojson }}
            {%- endif %}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#;

/// ftx's own Alpaca template: the Stanford Alpaca prompt, multi-turn by repetition.
const ALPACA: &str = r#"{#- ftx's own Alpaca template (written for ftx). -#}
{%- if tools or messages | selectattr('role', 'equalto', 'tool') | list %}
    {{- raise_exception('The alpaca template has no tool format') }}
{%- endif %}
{{- bos_token or '' }}
{%- if messages[0].role == 'system' %}
    {{- messages[0].content + '\n\n' }}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {{- 'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n' }}
    {%- set loop_messages = messages %}
{%- endif %}
{%- for message in loop_messages %}
    {%- if message.role == 'user' %}
        {{- '### Instruction:\n' + message.content + '\n\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '### Response:\n' + message.content + (eos_token or '') }}
        {%- if not loop.last %}
            {{- '\n\n' }}
        {%- endif %}
    {%- else %}
        {{- raise_exception('After the optional first system message, the alpaca template accepts only user and assistant roles') }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '### Response:\n' }}
{%- endif %}
"#;

/// ftx's own Llama 3 template: the Llama 3 header/`<|eot_id|>` form, tool calls as Llama 3.1's
/// JSON `{"name", "parameters"}` and tool results in the `ipython` role.
const LLAMA3: &str = r#"{#- ftx's own Llama 3 template (written for ftx). -#}
{{- bos_token or '' }}
{%- if tools %}
    {{- '<|start_header_id|>system<|end_header_id|>\n\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content | trim + '\n\n' }}
    {%- endif %}
    {{- 'You have access to the following functions. To call a function, respond with JSON of the form {"name": function name, "parameters": dictionary of argument name and its value}.\n\n' }}
    {%- for tool in tools %}
        {{- tool | tojson(indent=4) + '\n\n' }}
    {%- endfor %}
    {{- '<|eot_id|>' }}
{%- elif messages[0].role == 'system' %}
    {{- '<|start_header_id|>system<|end_header_id|>\n\n' + messages[0].content | trim + '<|eot_id|>' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'system' %}
        {%- if not loop.first %}
            {{- raise_exception('A system message is only allowed first') }}
        {%- endif %}
    {%- elif message.role == 'assistant' and message.tool_calls %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
        {%- if message.content | trim %}
            {{- message.content | trim + '\n' }}
        {%- endif %}
        {%- for call in message.tool_calls %}
            {{- '{"name": "' + call.function.name + '", "parameters": ' }}
            {%- if call.function.arguments is string %}
                {{- call.function.arguments }}
            {%- else %}
                {{- call.function.arguments | tojson }}
            {%- endif %}
            {{- '}' }}
            {%- if not loop.last %}
                {{- '\n' }}
            {%- endif %}
        {%- endfor %}
        {{- '<|eot_id|>' }}
    {%- else %}
        {%- set role = 'ipython' if message.role == 'tool' else message.role %}
        {{- '<|start_header_id|>' + role + '<|end_header_id|>\n\n' + message.content | trim + '<|eot_id|>' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"#;

/// ftx's own Mistral template: `[INST] … [/INST]` as in Mistral-7B-Instruct, the system message
/// folded into the first user turn, tools in the v3 `[AVAILABLE_TOOLS]`/`[TOOL_CALLS]` form.
const MISTRAL: &str = r#"{#- ftx's own Mistral [INST] template (written for ftx). -#}
{%- if messages[0].role == 'system' %}
    {%- set system_message = messages[0].content | trim %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set system_message = '' %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- set user_count = loop_messages | selectattr('role', 'equalto', 'user') | list | length %}
{%- set ns = namespace(users=0) %}
{{- bos_token or '' }}
{%- for message in loop_messages %}
    {%- if message.role == 'user' %}
        {%- set ns.users = ns.users + 1 %}
        {%- if tools and ns.users == user_count %}
            {{- '[AVAILABLE_TOOLS] ' + tools | tojson + '[/AVAILABLE_TOOLS]' }}
        {%- endif %}
        {%- if ns.users == 1 and system_message %}
            {{- '[INST] ' + system_message + '\n\n' + message.content | trim + ' [/INST]' }}
        {%- else %}
            {{- '[INST] ' + message.content | trim + ' [/INST]' }}
        {%- endif %}
    {%- elif message.role == 'assistant' %}
        {%- if message.tool_calls %}
            {%- if message.content | trim %}
                {{- ' ' + message.content | trim }}
            {%- endif %}
            {{- '[TOOL_CALLS] [' }}
            {%- for call in message.tool_calls %}
                {{- '{"name": "' + call.function.name + '", "arguments": ' }}
                {%- if call.function.arguments is string %}
                    {{- call.function.arguments }}
                {%- else %}
                    {{- call.function.arguments | tojson }}
                {%- endif %}
                {{- '}' + (', ' if not loop.last else '') }}
            {%- endfor %}
            {{- ']' + (eos_token or '') }}
        {%- else %}
            {{- ' ' + message.content | trim + (eos_token or '') }}
        {%- endif %}
    {%- elif message.role == 'tool' %}
        {{- '[TOOL_RESULTS] ' + message.content | trim + '[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception('After the optional first system message, the mistral template accepts only user, assistant and tool roles') }}
    {%- endif %}
{%- endfor %}
"#;

/// ftx's own Zephyr template: `<|role|>\n…</s>` turns, as Zephyr and TinyLlama-Chat use.
const ZEPHYR: &str = r#"{#- ftx's own Zephyr template (written for ftx). -#}
{%- if tools or messages | selectattr('role', 'equalto', 'tool') | list %}
    {{- raise_exception('The zephyr template has no tool format') }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role not in ['system', 'user', 'assistant'] %}
        {{- raise_exception('The zephyr template accepts only system, user and assistant roles') }}
    {%- endif %}
    {{- '<|' + message.role + '|>\n' + message.content | trim + (eos_token or '') + '\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|assistant|>\n' }}
{%- endif %}
"#;
