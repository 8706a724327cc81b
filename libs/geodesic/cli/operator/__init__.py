"""The operator commands, one module per job: args (argument types), plumbing
(connections, exit codes), changes (handlers that change the plane), reads (status,
gates, history, report), render (tables); commands.register builds the parser tree."""
