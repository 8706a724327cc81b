"""The logic behind the operator commands (`geodesic status | gates | history | report`).

Pure functions over already-read data (control snapshots, audit entries, the risk
supervisor's and the shadow's published status), so each answer an operator relies on is
unit-tested without Redis; the CLI (geodesic.cli.operator_cmds) only reads and prints.

- common: time parsing/formatting, URL masking, JSON-safe values
- history: audit entries, replay of the control plane to any instant, "which model at T"
- gates: the promotion gate table (registry verification, offline, live)
- status: the status document (slots, rollout, switches, win rates, drift, shadow)
- report: the daily risk report (JSON, CSV, PNG charts)
"""
