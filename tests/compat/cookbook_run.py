"""Run a tinker-cookbook recipe, unmodified, against a Tinker server with local data.

Run it with the python of an environment holding ``tinker`` and ``tinker-cookbook``::

    /work/venvs/cookbook/bin/python tests/compat/cookbook_run.py sl_loop \
        --base-url http://127.0.0.1:8123 --model tinkex/tiny-llama-100k \
        --tokenizer-dir /tmp/tok --log-path /tmp/runs/sl_loop

The recipe module (``tinker_cookbook.recipes.<name>``) is executed as ``__main__`` with its
own command line (``chz`` ``key=value`` options), exactly as ``python -m`` would. Nothing
in the recipe files is changed. Three things the recipes take from the outside world are
redirected here, through library seams, because a local server on a built-in model has no
Hugging Face hub behind it:

* ``datasets.load_dataset("HuggingFaceH4/no_robots")`` and ``("openai/gsm8k", "main")``
  read the small JSONL files in ``tests/compat/data/`` (same columns as the hub datasets);
  any other name raises.
* ``tinker_cookbook.tokenizer_utils.get_tokenizer(model)``: the model name is registered
  with the cookbook's own ``register_tokenizer`` to load ``--tokenizer-dir`` with
  ``AutoTokenizer.from_pretrained`` (without ``--tokenizer-dir`` the cookbook's own lookup
  runs, which goes to the hub).
* ``tinker_cookbook.model_info.get_model_attributes(model)`` knows only hub model families
  (it raises ``ConfigurationError: Unknown model`` for ``tinkex/...``); for ``--model`` it
  answers a chat model whose recommended renderer is ``--renderer`` (default
  ``role_colon``, the cookbook's model-agnostic renderer). Every other name goes to the
  original function.

The recipe options used (per recipe, see ``RECIPE_ARGS``) make each run 3 steps with tiny
batches; ``--extra key=value`` adds or overrides options.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"
LOCAL_DATASETS = {
    "HuggingFaceH4/no_robots": {"train": "no_robots_train.jsonl", "test": "no_robots_test.jsonl"},
    "openai/gsm8k": {"train": "gsm8k_train.jsonl", "test": "gsm8k_test.jsonl"},
}
RECIPE_ARGS: dict[str, list[str]] = {
    "sl_loop": ["batch_size=2", "max_steps=3", "save_every=0", "max_length=256", "lora_rank=4"],
    "sl_basic": [
        "max_steps=3",
        # The blueprint sets dataset_builder as a value, so chz only takes sub-options when
        # the builder itself is named again, with every field of its common_config.
        "dataset_builder=tinker_cookbook.recipes.chat_sl.chat_datasets:NoRobotsBuilder",
        "dataset_builder.common_config.model_name_for_tokenizer={model}",
        "dataset_builder.common_config.renderer_name={renderer}",
        "dataset_builder.common_config.batch_size=2",
        "dataset_builder.common_config.max_length=256",
        "dataset_builder.common_config.train_on_what=all_assistant_messages",
        "eval_every=0",
        "save_every=0",
        "lora_rank=4",
    ],
    "rl_loop": [
        "batch_size=2",
        "group_size=2",
        "max_tokens=8",
        "max_steps=3",
        "save_every=0",
        "lora_rank=4",
    ],
}


def _install_local_datasets() -> None:
    import datasets

    original = datasets.load_dataset

    def load_dataset(path: str, *args: Any, **kwargs: Any) -> Any:
        files = LOCAL_DATASETS.get(path)
        if files is None:
            if path in ("json", "csv", "parquet", "text") or os.path.exists(path):
                return original(path, *args, **kwargs)
            raise RuntimeError(f"cookbook_run: no local copy of dataset {path!r}")
        data_files = {split: str(DATA / name) for split, name in files.items()}
        loaded = original("json", data_files=data_files)
        split = kwargs.get("split")
        return loaded[split] if split else loaded

    datasets.load_dataset = load_dataset


def _install_tokenizer(model: str, tokenizer_dir: str | None) -> None:
    if tokenizer_dir is None:
        return
    from tinker_cookbook import tokenizer_utils

    cache: dict[str, Any] = {}

    def factory() -> Any:
        if "tok" not in cache:
            from transformers import AutoTokenizer

            cache["tok"] = AutoTokenizer.from_pretrained(tokenizer_dir)
        return cache["tok"]

    tokenizer_utils.register_tokenizer(model, factory)


def _install_model_info(model: str, renderer: str) -> None:
    from tinker_cookbook import model_info

    original = model_info.get_model_attributes
    org, _, version = model.partition("/")
    attributes = model_info.ModelAttributes(
        organization=org,
        version_str=version or model,
        size_str="tiny",
        is_chat=True,
        recommended_renderers=(renderer,),
    )

    def get_model_attributes(model_name: str) -> Any:
        if model_name.split(":", 1)[0] == model:
            return attributes
        return original(model_name)

    model_info.get_model_attributes = get_model_attributes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", choices=sorted(RECIPE_ARGS))
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", default="tml-compat-key")
    parser.add_argument("--model", default="tinkex/tiny-llama-100k")
    parser.add_argument("--tokenizer-dir", default=None)
    parser.add_argument("--renderer", default="role_colon")
    parser.add_argument("--log-path", required=True)
    parser.add_argument("--extra", action="append", default=[], help="extra key=value option")
    args = parser.parse_args(argv)

    for name in list(os.environ):
        if name.startswith("TINKER_"):
            del os.environ[name]
    os.environ["TINKER_API_KEY"] = args.api_key
    os.environ["TINKER_BASE_URL"] = args.base_url
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")

    _install_local_datasets()
    _install_tokenizer(args.model, args.tokenizer_dir)
    _install_model_info(args.model, args.renderer)

    options = [
        f"model_name={args.model}",
        f"base_url={args.base_url}",
        f"log_path={args.log_path}",
        *(o.format(model=args.model, renderer=args.renderer) for o in RECIPE_ARGS[args.recipe]),
        *args.extra,
    ]
    sys.argv = [f"tinker_cookbook.recipes.{args.recipe}", *options]
    runpy.run_module(f"tinker_cookbook.recipes.{args.recipe}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
