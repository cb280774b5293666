"""Runtime plumbing shared by training, evaluation and tests: device choice and CPU mode.

Importing it silences megatron-core's import-time notices that TransformerEngine / apex are
absent: both are optional here and the fallbacks are the intended path on CPU.
"""

import warnings

warnings.filterwarnings("ignore", message=r".*(Transformer Engine|Apex).*(not installed|Falling back).*")
warnings.filterwarnings("ignore", message=r".*Apex is not installed.*")
warnings.filterwarnings("ignore", message=r".*full scope is deprecated.*")  # megatron-core's own default
