"""Run by tests/export/test_consumers.py with the Python of the PEFT environment (torch, peft,
transformers; `make peft-venv`): the logits of a base model, and of the same base with a PEFT
adapter, computed by transformers and peft on the CPU in float32, saved as one .npz file.

usage: python peft_logits.py BASE_DIR PEFT_DIR OUT.npz TOKEN_ID...
"""

from __future__ import annotations

import sys

import numpy as np
import peft
import torch
import transformers


def main(base: str, adapter: str, out: str, ids: list[int]) -> None:
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model.eval()
    inputs = torch.tensor([ids])
    with torch.no_grad():
        plain = model(inputs).logits[0].numpy()
        adapted = peft.PeftModel.from_pretrained(model, adapter)
        adapted.eval()
        logits = adapted(inputs).logits[0].numpy()
    np.savez(out, base=plain, adapted=logits, peft_version=np.array(peft.__version__))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], [int(t) for t in sys.argv[4:]])
