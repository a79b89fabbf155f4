"""The `cdc` command line: it parses options, builds objects and calls the core.

`app` registers the commands; each command group lives in a module of its own (`run`,
`check`, `status` with `health`, `position`, `snapshot`, `dlq`), and `common` holds what they
share: the options, config loading, logging and the one error format.
"""
