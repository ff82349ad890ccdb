//! `tollgate users …` and `tollgate teams …`: members and teams of the organization,
//! as the operator, through the service layer (audited with the actor `cli`).

use clap::Subcommand;
use tollgate_core::tenancy::Role;
use tollgate_service::{Actor, Services, TeamInput};

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Add a user to the organization; prints a generated password once if none is given.
    Create {
        #[arg(long)]
        email: String,
        /// owner, admin or member.
        #[arg(long, default_value = "member")]
        role: String,
        /// Team ids to join (repeat or comma-separate).
        #[arg(long = "team", value_delimiter = ',')]
        teams: Vec<String>,
        /// Read from TOLLGATE_NEW_USER_PASSWORD so it never sits in shell history.
        #[arg(long, env = "TOLLGATE_NEW_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// List the organization's members.
    List,
    /// Change a member's role.
    SetRole {
        user_id: String,
        /// owner, admin or member.
        role: String,
    },
}

#[derive(Subcommand)]
pub enum TeamsCommand {
    /// Create a team.
    Create {
        #[arg(long)]
        name: String,
        /// Models the team may use (repeat or comma-separate); none: all.
        #[arg(long = "allowed-model", value_delimiter = ',')]
        allowed_models: Vec<String>,
    },
    /// List teams.
    List,
    /// Add a user to a team.
    AddMember { team_id: String, user_id: String },
    /// Remove a user from a team.
    RemoveMember { team_id: String, user_id: String },
}

fn parse_role(r: &str) -> anyhow::Result<Role> {
    Role::parse(r).ok_or_else(|| anyhow::anyhow!("role must be owner, admin or member, not {r:?}"))
}

pub async fn users(command: UsersCommand, services: &Services) -> anyhow::Result<()> {
    let actor = Actor::cli();
    match command {
        UsersCommand::Create { email, role, teams, password } => {
            let (view, generated) = services.create_member(&actor, &email, password, parse_role(&role)?, teams).await?;
            println!("{}", serde_json::to_string_pretty(&view)?);
            if let Some(p) = generated {
                println!("Generated password (shown once): {p}");
            }
        }
        UsersCommand::List => println!("{}", serde_json::to_string_pretty(&services.list_members(&actor).await?)?),
        UsersCommand::SetRole { user_id, role } => {
            services.set_role(&actor, &user_id, parse_role(&role)?).await?;
            println!("{user_id} is now {role}.");
        }
    }
    Ok(())
}

pub async fn teams(command: TeamsCommand, services: &Services) -> anyhow::Result<()> {
    let actor = Actor::cli();
    match command {
        TeamsCommand::Create { name, allowed_models } => {
            let input = TeamInput { name: Some(name), allowed_models: Some(allowed_models), ..Default::default() };
            println!("{}", serde_json::to_string_pretty(&services.create_team(&actor, input).await?)?);
        }
        TeamsCommand::List => println!("{}", serde_json::to_string_pretty(&services.list_teams(&actor).await?)?),
        TeamsCommand::AddMember { team_id, user_id } => {
            services.set_team_member(&actor, &team_id, &user_id, true).await?
        }
        TeamsCommand::RemoveMember { team_id, user_id } => {
            services.set_team_member(&actor, &team_id, &user_id, false).await?;
        }
    }
    Ok(())
}
