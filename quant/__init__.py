"""Post-training weight quantization (QuIP's LDLQ / ldlqRG with incoherence processing, GPTQ, nearest).

One job per module: quantizers (the integer grids), rounding (the algorithms), incoherence (random
orthogonal pre/post-processing), calibration (layer-by-layer capture of each linear's input Hessian),
families (OPT / Llama adapters), datautils (calibration and evaluation text), driver (quantize a model,
evaluate perplexity) and saveload (quantized checkpoints).
"""
