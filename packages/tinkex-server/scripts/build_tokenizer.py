"""Build the small BPE tokenizer shipped with tinkex-server (run once; output is committed).

Usage (from the repository root)::

    hatch run python packages/tinkex-server/scripts/build_tokenizer.py

It trains a byte-level BPE (``tokenizers`` library) with a vocabulary of at most 1024 entries
on a small English + digits corpus written below, and writes ``tokenizer.json`` and
``tokenizer_config.json`` into ``src/tinkex_server/data/tokenizer/``. Digits are always split
one per token, so arithmetic data tokenises the same way everywhere. Training is deterministic
for a fixed corpus and ``tokenizers`` version; the files are generated once and then treated
as data (do not regenerate them casually: every built-in model's vocabulary depends on them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

VOCAB_SIZE = 1024
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "tinkex_server" / "data" / "tokenizer"

PROSE = """
The quick brown fox jumps over the lazy dog. A small model learns to copy short sentences.
Training a language model means showing it text and nudging its weights so that the next
token becomes more likely. The loss goes down when the model predicts well, and it goes up
when the model is surprised. We write the loss as a sum over tokens, never as a mean.
Once upon a time there was a little robot who lived in a quiet village by the sea. Every
morning the robot walked to the harbour, counted the boats, and wrote the number in a book.
One day the robot counted seven boats, the next day nine, and on the third day only two.
The weather was cold and the wind was strong, so most of the fishermen stayed at home.
The robot asked the old captain why the boats did not come back. The captain smiled and
said that the sea has its own rules, and that a good sailor always listens to the wind.
Hello! How are you today? I am fine, thank you. What would you like to talk about?
Please answer the question in one short sentence. The answer is yes. The answer is no.
Sampling picks the next token at random, with probabilities given by the model. A low
temperature makes the model more confident, and a temperature of zero always picks the most
likely token. Top-k keeps only the k best tokens; top-p keeps the smallest set of tokens
whose probabilities add up to p.
A teacher asked her students to write a story about their favourite animal. Tom wrote about
a cat that could read books. Anna wrote about a horse that could run faster than a train.
Sam wrote about a bird that sang every morning at six o'clock.
Water boils at one hundred degrees. Ice melts when it gets warm. The sun rises in the east
and sets in the west. There are seven days in a week and twelve months in a year.
Monday, Tuesday, Wednesday, Thursday, Friday, Saturday and Sunday are the days of the week.
January, February, March, April, May, June, July, August, September, October, November and
December are the months of the year. Spring, summer, autumn and winter are the seasons.
Red, orange, yellow, green, blue and purple are colours of the rainbow.
The cat sat on the mat. The dog slept under the table. The children played in the garden.
She opened the window and looked at the stars. He closed the door and went to sleep.
Learning rate, batch size, weight decay and gradient clipping are settings of the optimizer.
An adapter adds a small low-rank update to a large frozen weight matrix.
Questions and answers: What is the capital of France? Paris. What colour is the sky? Blue.
How many legs does a spider have? Eight. Which is larger, ten or three? Ten.
Translate to pig latin: hello becomes ellohay, world becomes orldway, apple becomes appleway.
Reverse the word: cat becomes tac, dog becomes god, star becomes rats, loop becomes pool.
"""

WORDS_TEXT = (
    "the a an and or but if then so because when where what who which how why this that these "
    "those is are was were be been being have has had do does did can could will would should "
    "may might must shall one two three four five six seven eight nine ten eleven twelve "
    "first second third last next good bad big small long short new old hot cold fast slow "
    "happy sad time day night year week month morning evening house home school book word "
    "number story water fire earth air tree flower river mountain city road car train boat "
    "ship plane man woman child boy girl friend mother father sister brother teacher student "
    "doctor say said tell told ask asked answer answered go went come came see saw look "
    "looked make made take took give gave find found think thought know knew want wanted like "
    "liked user assistant system model token tokens loss weight weights train step sample "
    "prompt"
)
WORDS = WORDS_TEXT.split()


def corpus_lines() -> list[str]:
    """The training corpus: prose, word drills, arithmetic and a few chat transcripts."""
    lines = [line.strip() for line in PROSE.strip().splitlines() if line.strip()]
    # Word drills: every word in lower case, capitalised, and in short phrases.
    for i, word in enumerate(WORDS):
        other = WORDS[(i * 7 + 3) % len(WORDS)]
        lines.append(f"{word} {other}. {word.capitalize()} {other}, {word}!")
    # Arithmetic and counting (digits are split one per token by the pre-tokenizer).
    for a in range(0, 40, 3):
        for b in range(1, 30, 4):
            lines.append(f"{a} + {b} = {a + b}. {a} * {b} = {a * b}. {a + b} - {b} = {a}.")
    lines.extend(" ".join(str(n) for n in range(start, start + 12)) for start in range(0, 200, 12))
    lines.extend(
        f"On {day} {month} {year} at {hour}:{minute:02d} the train left platform {day % 9 + 1}."
        for day, month, year, hour, minute in [
            (1, "January", 2024, 9, 5),
            (12, "March", 1999, 14, 30),
            (23, "July", 2031, 6, 45),
            (30, "October", 1987, 21, 0),
        ]
    )
    # Chat transcripts in the template's format.
    chats = [
        ("What is two plus two?", "Two plus two is 4."),
        ("Say hello.", "Hello!"),
        ("Name a colour.", "Blue."),
        ("Count to five.", "1, 2, 3, 4, 5."),
        ("Who are you?", "I am a small assistant model."),
    ]
    for question, answer in chats:
        lines.append(
            f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n"
        )
    return lines


def build() -> Tokenizer:
    """Train the tokenizer on :func:`corpus_lines`."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeat the corpus so that merge counts are stable and large enough.
    tokenizer.train_from_iterator(corpus_lines() * 3, trainer=trainer)
    return tokenizer


def tokenizer_config(tokenizer: Tokenizer) -> dict[str, object]:
    """The ``tokenizer_config.json`` for ``transformers.PreTrainedTokenizerFast``."""
    decoder = {
        str(tokenizer.token_to_id(tok)): {
            "content": tok,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for tok in SPECIAL_TOKENS
    }
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|bos|>",
        "eos_token": "<|eos|>",
        "pad_token": "<|pad|>",
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": decoder,
    }


def main() -> int:
    tokenizer = build()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(OUT_DIR / "tokenizer.json"), pretty=False)
    config = json.dumps(tokenizer_config(tokenizer), indent=2, sort_keys=True) + "\n"
    (OUT_DIR / "tokenizer_config.json").write_text(config, encoding="utf-8")
    print(f"vocab size {tokenizer.get_vocab_size()} written to {OUT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
