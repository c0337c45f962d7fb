//! The broker's typed errors and their one mapping to Kafka error codes.

use kafka_protocol::error::ResponseError;

use crate::config::alter::AlterError;
use crate::fetch_session::FetchSessionError;
use crate::group::GroupError;
use crate::log::LogError;
use crate::meta::MetaError;
use crate::storage_task::TaskFailed;
use crate::txn::TxnError;

impl From<crate::group::SetGroupConfigError> for BrokerError {
    fn from(e: crate::group::SetGroupConfigError) -> BrokerError {
        match e {
            crate::group::SetGroupConfigError::Alter(e) => e.into(),
            crate::group::SetGroupConfigError::Invalid(e) => BrokerError::InvalidConfig(e.0),
            crate::group::SetGroupConfigError::Meta(e) => BrokerError::Meta(e),
        }
    }
}

impl From<AlterError> for BrokerError {
    fn from(e: AlterError) -> BrokerError {
        match e {
            AlterError::InvalidRequest(m) => BrokerError::InvalidRequest(m),
            AlterError::InvalidConfig(m) => BrokerError::InvalidConfig(m),
        }
    }
}

/// Everything a request can fail with, by Kafka's meaning.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("unknown topic id")]
    UnknownTopicId,
    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),
    #[error("{0}")]
    InvalidTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("topic deletion is disabled (delete.topic.enable=false)")]
    TopicDeletionDisabled,
    #[error("{0}")]
    InvalidRequiredAcks(String),
    /// Records refused one by one: (index in the batch, reason).
    #[error("One or more records have been rejected due to {} record errors in total", .0.len())]
    InvalidRecords(Vec<(i32, String)>),
    #[error("{0}")]
    UnsupportedVersion(String),
    #[error("{0}")]
    PolicyViolation(String),
    /// A transactional batch outside its transaction, as Produce v11+ reports it.
    #[error("{0}")]
    TransactionAbortable(String),
    /// Kafka's retriable answer to older Produce versions while a transaction is ending.
    #[error("{0}")]
    NotEnoughReplicas(String),
    #[error("{0}")]
    CoordinatorNotAvailable(String),
    /// Produce refused while the log directory's filesystem is above a disk pressure
    /// threshold: retriable, with a throttle time.
    #[error("{0}")]
    DiskPressure(String),
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Txn(#[from] TxnError),
    #[error(transparent)]
    FetchSession(#[from] FetchSessionError),
    /// A transactional produce without a transactional id in the request.
    #[error("{0}")]
    TransactionalIdAuthorizationFailed(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// A storage task panicked: a broker bug, answered as Kafka answers one it did not expect.
    #[error(transparent)]
    TaskFailed(#[from] TaskFailed),
}

impl BrokerError {
    /// The Kafka error this becomes on the wire.
    pub fn kafka(&self) -> ResponseError {
        use ResponseError as E;
        match self {
            BrokerError::UnknownTopicOrPartition => E::UnknownTopicOrPartition,
            BrokerError::UnknownTopicId => E::UnknownTopicId,
            BrokerError::TopicAlreadyExists(_) => E::TopicAlreadyExists,
            BrokerError::InvalidTopic(_) => E::InvalidTopicException,
            BrokerError::InvalidPartitions(_) => E::InvalidPartitions,
            BrokerError::InvalidReplicationFactor(_) => E::InvalidReplicationFactor,
            BrokerError::InvalidReplicaAssignment(_) => E::InvalidReplicaAssignment,
            BrokerError::InvalidConfig(_) => E::InvalidConfig,
            BrokerError::InvalidRequest(_) => E::InvalidRequest,
            BrokerError::TopicDeletionDisabled => E::TopicDeletionDisabled,
            BrokerError::InvalidRequiredAcks(_) => E::InvalidRequiredAcks,
            BrokerError::InvalidRecords(_) => E::InvalidRecord,
            BrokerError::UnsupportedVersion(_) => E::UnsupportedVersion,
            BrokerError::PolicyViolation(_) => E::PolicyViolation,
            BrokerError::TransactionAbortable(_) => E::TransactionAbortable,
            BrokerError::NotEnoughReplicas(_) => E::NotEnoughReplicas,
            BrokerError::CoordinatorNotAvailable(_) => E::CoordinatorNotAvailable,
            // Retried by every client without a metadata refresh, and it says nothing was
            // written, so idempotent producers retry safely (KAFKA_STORAGE_ERROR would refresh
            // metadata in each client, and franz-go would pause ~5 s per retry for it).
            BrokerError::DiskPressure(_) => E::NotEnoughReplicas,
            BrokerError::Log(e) => match e {
                // A full filesystem, found by a write: as hard disk pressure.
                LogError::NoSpace(_) => E::NotEnoughReplicas,
                LogError::CorruptRecord(_) => E::CorruptMessage,
                LogError::InvalidRecord(_) => E::InvalidRecord,
                LogError::MessageTooLarge { .. } => E::MessageTooLarge,
                LogError::RecordBatchTooLarge { .. } => E::RecordListTooLarge,
                LogError::InvalidTimestamp(_) => E::InvalidTimestamp,
                LogError::InvalidRecords(_) => E::InvalidRecord,
                LogError::OffsetOutOfRange { .. } => E::OffsetOutOfRange,
                LogError::OutOfOrderSequence(_) => E::OutOfOrderSequenceNumber,
                LogError::InvalidProducerEpoch(_) => E::InvalidProducerEpoch,
                LogError::InvalidTxnState(_) => E::InvalidTxnState,
                _ => E::KafkaStorageError,
            },
            BrokerError::Meta(_) => E::KafkaStorageError,
            BrokerError::TransactionalIdAuthorizationFailed(_) => E::TransactionalIdAuthorizationFailed,
            BrokerError::Txn(e) => match e {
                TxnError::InvalidRequest(_) => E::InvalidRequest,
                TxnError::InvalidTransactionTimeout => E::InvalidTransactionTimeout,
                TxnError::ConcurrentTransactions => E::ConcurrentTransactions,
                TxnError::ProducerFenced => E::ProducerFenced,
                TxnError::InvalidProducerEpoch => E::InvalidProducerEpoch,
                TxnError::InvalidProducerIdMapping => E::InvalidProducerIdMapping,
                TxnError::InvalidTxnState(_) => E::InvalidTxnState,
                TxnError::NotInTransaction(_) => E::InvalidTxnState,
                TxnError::TransactionalIdNotFound => E::TransactionalIdNotFound,
                TxnError::Storage(_) | TxnError::Marker(_) => E::CoordinatorNotAvailable,
            },
            BrokerError::FetchSession(e) => match e {
                FetchSessionError::NotFound => E::FetchSessionIdNotFound,
                FetchSessionError::InvalidEpoch => E::InvalidFetchSessionEpoch,
                FetchSessionError::TopicIdMismatch => E::FetchSessionTopicIdError,
            },
            BrokerError::TaskFailed(_) => E::UnknownServerError,
            BrokerError::Group(e) => match e {
                GroupError::UnknownMemberId => E::UnknownMemberId,
                GroupError::IllegalGeneration => E::IllegalGeneration,
                GroupError::RebalanceInProgress => E::RebalanceInProgress,
                GroupError::MemberIdRequired => E::MemberIdRequired,
                GroupError::FencedInstanceId => E::FencedInstanceId,
                GroupError::InconsistentGroupProtocol => E::InconsistentGroupProtocol,
                GroupError::InvalidGroupId => E::InvalidGroupId,
                GroupError::InvalidSessionTimeout => E::InvalidSessionTimeout,
                GroupError::NonEmptyGroup => E::NonEmptyGroup,
                GroupError::GroupIdNotFound => E::GroupIdNotFound,
                GroupError::OffsetMetadataTooLarge => E::OffsetMetadataTooLarge,
                GroupError::GroupSubscribedToTopic => E::GroupSubscribedToTopic,
                GroupError::CoordinatorNotAvailable => E::CoordinatorNotAvailable,
                GroupError::UnknownTopicOrPartition => E::UnknownTopicOrPartition,
                GroupError::InvalidRequest => E::InvalidRequest,
                GroupError::UnsupportedAssignor => E::UnsupportedAssignor,
                GroupError::FencedMemberEpoch => E::FencedMemberEpoch,
                GroupError::StaleMemberEpoch => E::StaleMemberEpoch,
                GroupError::UnreleasedInstanceId => E::UnreleasedInstanceId,
                GroupError::GroupMaxSizeReached => E::GroupMaxSizeReached,
                GroupError::InvalidRegularExpression => E::InvalidRegularExpression,
                GroupError::UnsupportedVersion => E::UnsupportedVersion,
            },
        }
    }

    pub fn code(&self) -> i16 {
        self.kafka().code()
    }

    /// The message for responses that carry one; `None` where Kafka sends a null message.
    pub fn message(&self) -> Option<String> {
        match self {
            BrokerError::UnknownTopicOrPartition | BrokerError::UnknownTopicId => None,
            other => Some(other.to_string()),
        }
    }
}
