"""What several test modules share: running a batch task, the emulator's job store, small servers
written for one kind of fault, Redis and PostgreSQL databases, the Airflow cluster. Test modules
import from here, never from one another."""
