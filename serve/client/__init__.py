"""The one client of the OpenAI server that bench, smoke, parity, the sidecar and the tests share.

- :mod:`serve.client.endpoint`: the base URL (normalised once) and the optional API key, sent as
  ``Authorization: Bearer`` on every request.
- :mod:`serve.client.sse`: the server-sent-event chat stream, parsed once.
- :mod:`serve.client.metrics`: vLLM's ``/metrics`` counters and gauges, their deltas and resets.
- :mod:`serve.client.launched`: a server started in its own process group, waited for, stopped whole.
"""
