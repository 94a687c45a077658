"""The demo: a simulated machine, the example rules, the stack light, the queue, a local broker.

- `runner`: `Demo` and `run_demo` (what `linelight demo` runs);
- `view`: the full-screen and one-line views (pure);
- `broker`: the local mosquitto and the independent subscriber the demo starts;
- `rules.toml`: the rules used when the repo's examples are not beside the package.
"""

from linelight.agent.demo.runner import Demo, DemoOptions, run_demo

__all__ = ["Demo", "DemoOptions", "run_demo"]
