"""One module per stage: data -> lm -> lm_finetune -> classifier -> evaluate."""
