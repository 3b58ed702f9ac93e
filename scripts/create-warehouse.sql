-- The tfp warehouse beside Airflow's metadata database, owned by the same role.
CREATE DATABASE tfp OWNER airflow;
