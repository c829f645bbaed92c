#!/usr/bin/python3
"""TRL's GRPO advantages (trl/trainer/grpo_trainer.py, GRPOTrainer._generate_and_score_completions),
written out with torch as TRL does, for rl/grpo_loss.h's group_advantages.

usage: grpo_advantages_ref.py IN.json OUT.json
IN: {"rewards": [N], "group": G, "eps": E}   (TRL's eps is 1e-4)
OUT: {"<std>/<scale>": [N] for std in sample, population and scale in group, batch, none}
TRL itself uses torch.std (Bessel-corrected: "sample"); "population" is the same code with
unbiased=False. float64 here (TRL computes in the rewards' float32), so the comparison can be tight.
"""
import json
import sys

import torch


def trl_advantages(rewards, num_generations, scale_rewards, unbiased, eps):
    mean_grouped_rewards = rewards.view(-1, num_generations).mean(dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards in ["group", "none"]:
        std_rewards = rewards.view(-1, num_generations).std(dim=1, unbiased=unbiased)
        std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
    elif scale_rewards == "batch":
        std_rewards = rewards.std(unbiased=unbiased).expand_as(rewards)
    else:
        raise ValueError(scale_rewards)
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + eps)
    return advantages


def main():
    inp = json.load(open(sys.argv[1]))
    rewards = torch.tensor(inp["rewards"], dtype=torch.float64)
    out = {}
    for std, unbiased in (("sample", True), ("population", False)):
        for scale in ("group", "batch", "none"):
            out[f"{std}/{scale}"] = trl_advantages(rewards, inp["group"], scale, unbiased, inp["eps"]).tolist()
    json.dump(out, open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()
