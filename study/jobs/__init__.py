"""The jobs the command line runs, each on a parsed `Study` and an `Executor`, each returning a
summary for the command line to print: `run` (train and measure what is missing), `measure`
(measures of stored networks from their checkpoints), `score` (a user's function on every
stored network, for `analysis score`), `status` (what is stored, as data) and `migrate` (rows
of an older run-id schema under their new ids).

A job that fans out gives `executor.fan_out` its items, a task (a module-level function of
plain arguments, run in a Ray worker or in this process: one network's work, through
`study.runner`), a ``record`` that counts the tasks' small records and returns the counts the
progress bar shows, and a summary that extends `executor.Ended`. A new job is a module here::

    @dataclass(kw_only=True)
    class Summary(Ended):
        sizes: dict[str, int] = field(default_factory=dict)

    def size_one(spec: RunSpec, out: str) -> tuple[str, int]:      # the task, in a worker
        model, *_ = runner.stored_network(Store(out, spec.study), spec)
        return spec.run_id, sum(p.numel() for p in model.parameters())

    def sizes(study: Study, executor: Executor = Executor()) -> Summary:
        s = Summary()
        def record(done):
            s.sizes[done[0]] = done[1]
            return {"sized": len(s.sizes)}
        return fan_out(study.runs(), size_one, lambda spec: (spec, study.out), study.resources,
                       record, executor, bar=Bar(f"{study.name} size", study.size), ended=s)

and the command line parses its flags, calls it and prints the summary (`study.cli`).
"""
