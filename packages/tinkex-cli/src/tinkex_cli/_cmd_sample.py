"""``tinkex sample``: sample completions from a base model or a saved checkpoint."""

from __future__ import annotations

import json
import math
from typing import Any

import click
import structlog

from tinkex_cli._context import CLIState, format_option, pass_state
from tinkex_cli._errors import CLIError, ExitCode
from tinkex_cli._output import Output
from tinkex_cli._progress import resolve_waiting
from tinkex_cli._sample_options import (
    DisplayOptions,
    ModelOptions,
    PromptOptions,
    SamplingOptions,
    display_options,
    model_options,
    prompt_options,
    sampling_options,
)
from tinkex_types import TinkexError

_log = structlog.get_logger("tinkex.cli")

__all__ = ["sample_command"]


def _tokenizer_for(sampler: Any) -> Any:
    """The sampler's tokenizer (resolved through the ``tinkex_resolve_tokenizer`` hook), or
    ``None`` when no plugin knows the model's tokenizer."""
    try:
        return sampler.get_tokenizer()
    except (TinkexError, LookupError, ImportError, OSError) as exc:
        _log.info("no_tokenizer", error=str(exc))
        return None


@click.command("sample")
@model_options
@prompt_options
@sampling_options
@display_options
@format_option
@pass_state
def sample_command(
    state: CLIState,
    model: ModelOptions,
    prompt: PromptOptions,
    sampling: SamplingOptions,
    display: DisplayOptions,
) -> None:
    """Sample from a base model (--base-model) or from saved weights (--model-path).

    PROMPT is the text to complete (or give -p TEXT, --prompt-tokens or --prompt-file).

    \b
    tinkex --base-url local:// sample --base-model tinkex/tiny-qwen3 "Hello" -n 2
    tinkex sample --model-path tinker://RUN/sampler_weights/final --prompt-tokens 1,2,3
    """
    from tinkex_types import ModelInput

    text, ids = prompt.read()
    params = sampling.params()
    sampler = model.create_sampler(state.service_client())
    tokenizer = _tokenizer_for(sampler)
    if ids is None:
        if tokenizer is None:
            raise CLIError(
                f"no tokenizer found for {model.name}; give --prompt-tokens instead",
                ExitCode.USAGE,
            )
        ids = list(tokenizer.encode(text or ""))
    response = resolve_waiting(
        sampler.sample(
            prompt=ModelInput.from_ints(ids),
            num_samples=sampling.num_samples,
            sampling_params=params,
            include_prompt_logprobs=display.prompt_logprobs,
        ),
        "Sampling",
        state.hooks,
    )
    doc = {
        "base_model": model.base_model,
        "model_path": model.model_path,
        "prompt_tokens": ids,
        "sampling_params": params.model_dump(mode="json"),
        "samples": [_sample_doc(i, seq, tokenizer) for i, seq in enumerate(response.sequences)],
        "prompt_logprobs": response.prompt_logprobs if display.prompt_logprobs else None,
    }
    state.output.emit(doc, lambda out: _render(out, doc, display))


def _sample_doc(index: int, seq: Any, tokenizer: Any) -> dict[str, Any]:
    """One sampled sequence as the JSON document shows it."""
    logprobs = list(seq.logprobs) if seq.logprobs is not None else None
    return {
        "index": index,
        "text": tokenizer.decode(seq.tokens) if tokenizer is not None else None,
        "tokens": list(seq.tokens),
        "logprobs": logprobs,
        "mean_logprob": sum(logprobs) / len(logprobs) if logprobs else None,
        "stop_reason": str(seq.stop_reason),
    }


def _render(out: Output, doc: dict[str, Any], display: DisplayOptions) -> None:
    """The table (text) form of the document."""
    if display.prompt_logprobs and doc["prompt_logprobs"] is not None:
        out.line("Prompt logprobs: " + _fmt_floats(doc["prompt_logprobs"]))
    for s in doc["samples"]:
        mean = s["mean_logprob"]
        detail = f"stop: {s['stop_reason']}, {len(s['tokens'])} tokens"
        if mean is not None:
            detail += f", mean logprob {mean:.3f}"
        out.line(f"Sample {s['index'] + 1} ({detail}):")
        out.line(s["text"] if s["text"] is not None else "(no tokenizer: text not decoded)")
        if display.show_tokens:
            out.line("tokens: " + json.dumps(s["tokens"]))
        if display.show_logprobs:
            out.line("logprobs: " + _fmt_floats(s["logprobs"]))
        out.line()


def _fmt_floats(values: list[float | None] | None) -> str:
    if values is None:
        return "(none)"
    return (
        "["
        + ", ".join("null" if v is None or not math.isfinite(v) else f"{v:.4f}" for v in values)
        + "]"
    )
