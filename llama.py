"""Llama-family models through opt.py's code (QuIP's llama.py entry point): same flags, family 'llama'.

    python llama.py MODEL wikitext2 --wbits 2 --quant ldlqRG --incoh_processing
"""
import opt
from utils.cli import run_cli

if __name__ == "__main__":
    run_cli(opt.main, opt.parse_args(family="llama"))
