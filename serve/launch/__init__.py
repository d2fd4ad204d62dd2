"""The launch core: profile -> facts -> rules -> plan -> argv, pure, with the probes at its edge."""
