#!/usr/bin/python3
"""PyTorch reference of GRPO's token-level loss (rl/grpo_loss.h), in float64 with autograd.

usage: grpo_ref.py IN.json OUT.json
IN: {"T", "V", "logits" [T*V], "target" [T] (-1: not a response token), "old_lp", "ref_lp", "adv" [T],
     "clip_eps", "clip_eps_high", "kl_beta"}
OUT: {"loss", "kl", "clip_frac", "dlogits" [T*V]}
"""
import json
import sys

import torch


def main():
    inp = json.load(open(sys.argv[1]))
    T, V = inp["T"], inp["V"]
    logits = torch.tensor(inp["logits"], dtype=torch.float64).reshape(T, V).requires_grad_(True)
    target = torch.tensor(inp["target"], dtype=torch.long)
    old_lp = torch.tensor(inp["old_lp"], dtype=torch.float64)
    ref_lp = torch.tensor(inp["ref_lp"], dtype=torch.float64)
    adv = torch.tensor(inp["adv"], dtype=torch.float64)
    eps_lo = inp["clip_eps"]
    eps_hi = inp["clip_eps_high"] if inp["clip_eps_high"] >= 0 else eps_lo
    beta = inp["kl_beta"]
    mask = target >= 0
    logp = torch.log_softmax(logits, dim=-1)
    lp = logp.gather(1, target.clamp(min=0).unsqueeze(1)).squeeze(1)
    ratio = torch.exp(lp - old_lp)
    surr = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - eps_lo, 1 + eps_hi) * adv)
    k3 = torch.exp(ref_lp - lp) - (ref_lp - lp) - 1
    per_token = -surr + beta * k3
    n = mask.sum()
    loss = (per_token * mask).sum() / n  # token-mean over the batch's response tokens
    loss.backward()
    clipped = ((torch.clamp(ratio, 1 - eps_lo, 1 + eps_hi) * adv < ratio * adv) & mask).double().sum() / n
    json.dump({"loss": loss.item(), "kl": ((k3 * mask).sum() / n).item(), "clip_frac": clipped.item(),
               "dlogits": logits.grad.reshape(-1).tolist()}, open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()
