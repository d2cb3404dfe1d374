"""A training script written for the official ``tinker`` SDK (its README/cookbook style).

The only change from a tinker script is the import line: ``import tinkex as tinker``.
The service comes from ``TINKER_BASE_URL`` (the test sets ``local://``).
"""

import numpy as np

import tinkex as tinker
from tinkex import types

service_client = tinker.ServiceClient()
capabilities = service_client.get_server_capabilities()
base_model = "tinkex/tiny-llama-100k"
training_client = service_client.create_lora_training_client(base_model=base_model, rank=8)
tokenizer = training_client.get_tokenizer()

examples = [
    {"input": "banana split", "output": "anana-bay plit-say"},
    {"input": "quantum physics", "output": "uantum-qay ysics-phay"},
    {"input": "donut shop", "output": "onut-day op-shay"},
]


def process_example(example: dict, tokenizer) -> types.Datum:
    prompt = f"English: {example['input']}\nPig Latin:"
    prompt_tokens = tokenizer.encode(prompt, add_special_tokens=True)
    prompt_weights = [0] * len(prompt_tokens)
    completion_tokens = tokenizer.encode(f" {example['output']}\n\n", add_special_tokens=False)
    completion_weights = [1] * len(completion_tokens)
    tokens = prompt_tokens + completion_tokens
    weights = prompt_weights + completion_weights
    input_tokens = tokens[:-1]
    target_tokens = tokens[1:]
    weights = weights[1:]
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens=input_tokens),
        loss_fn_inputs=dict(weights=weights, target_tokens=target_tokens),  # noqa: C408
    )


processed_examples = [process_example(ex, tokenizer) for ex in examples]

losses = []
for _ in range(6):
    fwdbwd_future = training_client.forward_backward(processed_examples, "cross_entropy")
    optim_future = training_client.optim_step(types.AdamParams(learning_rate=1e-2))
    fwdbwd_result = fwdbwd_future.result()
    optim_result = optim_future.result()
    logprobs = np.concatenate(
        [output["logprobs"].tolist() for output in fwdbwd_result.loss_fn_outputs]
    )
    weights = np.concatenate(
        [example.loss_fn_inputs["weights"].tolist() for example in processed_examples]
    )
    losses.append(float(-np.dot(logprobs, weights) / weights.sum()))

sampling_client = training_client.save_weights_and_get_sampling_client(name="pig-latin-model")
prompt = types.ModelInput.from_ints(tokenizer.encode("English: coffee break\nPig Latin:"))
params = types.SamplingParams(max_tokens=20, temperature=0.0, stop=["\n"])
future = sampling_client.sample(prompt=prompt, sampling_params=params, num_samples=8)
result = future.result()
completions = [tokenizer.decode(seq.tokens) for seq in result.sequences]

rest_client = service_client.create_rest_client()
checkpoints = rest_client.list_checkpoints(training_client.model_id).result()
service_client.close()
