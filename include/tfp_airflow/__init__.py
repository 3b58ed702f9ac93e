"""tfp's Airflow side: what the DAG files share, kept out of the Airflow-free ``tfp`` package."""
