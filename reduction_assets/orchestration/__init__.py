"""Everything that imports dagster: definitions, partitions, resources, sensors, jobs,
executors, run helpers, and the assets (thin: gather inputs, call a task, report)."""
