"""The embedded DGSS benchmark: synthetic multi-domain street scenes (`scenes`: the geometry and labels,
`styles`: the appearance domains, `synthetic`: the domains and `fishertune synth`'s files) and `fishertune
demo` (`demo`: the plan's runs, results and report; `records`: the committable record of each run).

It builds on the library (engine, data, tuners, report); nothing in the library imports it.
"""
