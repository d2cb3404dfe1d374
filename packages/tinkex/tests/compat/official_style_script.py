"""A script written for the official ``tinker`` 0.38 SDK, unmodified: ``import tinker``.

Run through ``python -m tinkex.run``; prints one JSON line with what the test checks.
"""

import json
import sys

import httpx
import tinker
from tinker import types
from tinker.lib.public_interfaces import APIFuture
from tinker.lib.public_interfaces.rest_client import RestClient
from tinker.lib.retry_handler import RetryConfig
from tinker.types.datum import Datum
from tinker.types.model_input import ModelInput
from tinker.types.tensor_data import TensorData

service_client = tinker.ServiceClient(
    display_name="runner-test", timeout=httpx.Timeout(60.0, connect=5.0)
)
training_client = service_client.create_lora_training_client(
    base_model="tinkex/tiny-llama-100k", rank=4
)
tokens = [1, 5, 9, 13, 17, 21, 25, 29]
datum = Datum(
    model_input=ModelInput.from_ints(tokens[:-1]),
    loss_fn_inputs={
        "target_tokens": TensorData(data=tokens[1:], dtype="int64", shape=[len(tokens) - 1]),
        "weights": TensorData(data=[1.0] * (len(tokens) - 1), dtype="float32"),
    },
)
losses = []
for _ in range(3):
    future = training_client.forward_backward([datum], "cross_entropy")
    assert isinstance(future, APIFuture)
    training_client.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    losses.append(future.result().metrics["loss:sum"])

saved = training_client.save_weights_for_sampler("runner").result()
sampler = service_client.create_sampling_client(
    model_path=saved.path,
    retry_config=RetryConfig(retry_delay_base=0.1, retry_delay_max=1.0, jitter_factor=0.1),
)
sample = sampler.sample(
    types.ModelInput.from_ints(tokens[:3]), 1, types.SamplingParams(max_tokens=4, seed=1)
).result()
rest = service_client.create_rest_client()
assert isinstance(rest, RestClient)
checkpoints = rest.list_checkpoints(training_client.model_id).result()
service_client.close()
print(
    json.dumps(
        {
            "tinker_module": tinker.__name__,
            "tinker_is_tinkex": sys.modules["tinker"] is sys.modules["tinkex"],
            "types_module": types.__name__,
            "losses": losses,
            "sampled": len(sample.sequences[0].tokens),
            "checkpoints": [c.tinker_path for c in checkpoints.checkpoints],
            "path": saved.path,
            "argv": sys.argv[1:],
        }
    )
)
