"""The blog's three questions as SQL over ``ray_points``, shared by the tests and the benchmark.

Fixed where the blog is wrong: minutes by sample time, the node whatever label carries it, and
``ray_tasks`` read as a level (each series' last value in the minute, summed over series).
"""

NODE_CPU_AND_MEMORY = """
    SELECT DATE_TRUNC('minute', time_unix_nano) AS minute, ray_node, metric_name, AVG(data_point_value) AS mean
    FROM ray_points WHERE metric_name IN ('ray_node_cpu_utilization', 'ray_node_mem_used')
    GROUP BY minute, ray_node, metric_name"""
FAILED_TASKS = """
    WITH last_per_series AS (
        SELECT DATE_TRUNC('minute', time_unix_nano) AS minute, ray_session, ray_job, "Name" AS task_name,
               "IsRetry", "Source", "Component", ray_node,
               LAST_VALUE(data_point_value ORDER BY time_unix_nano) AS tasks
        FROM ray_points WHERE metric_name = 'ray_tasks' AND "State" = 'FAILED'
        GROUP BY 1, 2, 3, 4, 5, 6, 7, 8)
    SELECT minute, ray_session, ray_job, task_name, SUM(tasks) AS failed FROM last_per_series
    GROUP BY minute, ray_session, ray_job, task_name"""
OBJECT_STORE_BYTES = """
    SELECT DATE_TRUNC('minute', time_unix_nano) AS minute, ray_node, "ObjectState" AS object_state,
           "Location" AS location, AVG(data_point_value) AS avg_bytes
    FROM ray_points WHERE metric_name = 'ray_object_store_memory'
    GROUP BY minute, ray_node, object_state, location"""
QUESTIONS = {
    "node CPU and memory per minute": NODE_CPU_AND_MEMORY,
    "failed tasks per minute by job and task": FAILED_TASKS,
    "object store bytes per minute by node, state and location": OBJECT_STORE_BYTES,
}
